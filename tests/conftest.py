"""Shared fixtures: tiny local models and data, a private cache, no network, no home writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from finetuning.testing import synthetic_chats, synthetic_preferences, write_jsonl

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE_CONFIGS = SHARED / "reference-configs"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    os.environ["FINETUNING_CACHE_DIR"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    for var in ("MLFLOW_TRACKING_URI", "CHECKPOINTS_PATH", "LOGS_PATH", "MLFLOW_RUN_ID"):
        os.environ.pop(var, None)
    yield


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from finetuning.testing import build_model

    return build_model(tmp_path_factory.mktemp("models") / "llama", "llama")


@pytest.fixture(scope="session")
def tiny_mistral(tmp_path_factory) -> Path:
    from finetuning.testing import build_model

    return build_model(tmp_path_factory.mktemp("models") / "mistral", "mistral")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    from finetuning.testing import build_model

    return build_model(tmp_path_factory.mktemp("models") / "qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


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


@pytest.fixture(scope="session")
def template_tokenizer(tiny_tokenizer):
    """The tiny tokenizer with every named template's special tokens added."""
    import copy

    from finetuning.data.templates import SPECS

    tok = copy.deepcopy(tiny_tokenizer)
    added = sorted({t for spec in SPECS.values() for t in spec.added_tokens})
    tok.add_special_tokens({"additional_special_tokens": added})
    return tok
