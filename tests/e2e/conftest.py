"""Fixtures for end-to-end runs: data files and a config writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetuning.testing import synthetic_chats, synthetic_preferences, write_jsonl


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "chat.jsonl", synthetic_chats(240, seed=0))


@pytest.fixture(scope="session")
def chat_data_small(tmp_path_factory) -> Path:
    return write_jsonl(
        tmp_path_factory.mktemp("data") / "chat-small.jsonl", synthetic_chats(60, seed=1)
    )


@pytest.fixture(scope="session")
def preference_data(tmp_path_factory) -> Path:
    return write_jsonl(
        tmp_path_factory.mktemp("data") / "pref.jsonl", synthetic_preferences(96, seed=0)
    )


def losses(output_dir: Path) -> list[float]:
    """Training losses the run logged, in order (from run_summary.json)."""
    summary = json.loads((output_dir / "run_summary.json").read_text())
    return [h["loss"] for h in summary["history"] if "loss" in h]


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "run_summary.json").read_text())
