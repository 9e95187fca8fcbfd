"""Fixtures of the vision-language tests: a tiny Gemma 3 and image chats in both conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetuning.testing import build_gemma3_model, synthetic_image_chats, write_jsonl


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> Path:
    return build_gemma3_model(tmp_path_factory.mktemp("models") / "gemma3")


@pytest.fixture(scope="session")
def image_data(tmp_path_factory) -> Path:
    """24 image chats with ``{"type": "image", "image": PATH}`` parts (paths relative)."""
    folder = tmp_path_factory.mktemp("image-data")
    return write_jsonl(folder / "train.jsonl", synthetic_image_chats(24, folder))


@pytest.fixture(scope="session")
def trl_image_data(tmp_path_factory) -> Path:
    """The same kind of rows in TRL's convention: an ``images`` column and placeholders."""
    folder = tmp_path_factory.mktemp("trl-image-data")
    return write_jsonl(folder / "train.jsonl", synthetic_image_chats(24, folder, "trl", seed=1))


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    from finetuning.testing import build_llava_model

    return build_llava_model(tmp_path_factory.mktemp("models") / "llava")
