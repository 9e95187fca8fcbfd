"""Shared fixtures: tiny local models and data, a private cache, no network, no home writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
