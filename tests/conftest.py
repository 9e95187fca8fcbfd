"""Shared fixtures: tiny local models and data, a private cache, no network, no home writes."""

from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for this process and every process it starts (they inherit it), set before
# torch is imported. The tiny models' matrices are far too small to gain from a second thread,
# and on a busy 2-core machine a second OpenMP thread that waits for a core makes each step 10-20x
# slower (measured: 54 ms vs 1.4 s per step of the tiny llama at load 6).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest

from finetuning.testing import synthetic_chats, synthetic_preferences, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
# Copies of ../shared/reference-configs, so the suite runs in a plain clone.
REFERENCE_CONFIGS = Path(__file__).resolve().parent / "fixtures" / "reference-configs"
#: Written by tools in the repository (not by tests).
_TOOL_DIRS = {".pytest_cache", ".ruff_cache", "__pycache__", ".git"}


def _repo_entries() -> set[str]:
    return {p.name for p in ROOT.iterdir() if p.name not in _TOOL_DIRS}


@pytest.fixture(scope="session", autouse=True)
def _outside_the_repository(tmp_path_factory):
    """Run the session in a temp folder, and fail it if a test wrote into the repository root.

    Defaults such as ``./checkpoints`` are relative to the working directory, so a test that
    forgets ``output_dir`` writes into the temp folder instead of the source tree.
    """
    before = _repo_entries()
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(cwd)
    new = sorted(_repo_entries() - before)
    assert not new, f"tests wrote into the repository root: {new}"


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    os.environ["FINETUNING_CACHE_DIR"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    import torch

    # In case torch was imported before this conftest (a plugin): the environment is too late then.
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    for var in ("MLFLOW_TRACKING_URI", "CHECKPOINTS_PATH", "LOGS_PATH", "MLFLOW_RUN_ID"):
        os.environ.pop(var, None)
    yield


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Give back what an in-process run changed: environment variables and MLflow's globals.

    A run exports its tracking target (``MLFLOW_TRACKING_URI``, ...) and transformers' MLflow
    callback sets MLflow's process-wide tracking URI and active experiment; left behind, the next
    test's run would log into a previous test's (deleted) store.
    """
    from tests.helpers import _mlflow_globals, _restore_mlflow_globals

    environ = dict(os.environ)
    tracking = _mlflow_globals()
    yield
    _restore_mlflow_globals(tracking)
    os.environ.clear()
    os.environ.update(environ)


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


# Trained tiny checkpoints, trained once per session (in-process) for every test that only needs
# "a trained checkpoint" (the tools, generation, stop tokens, merging; any folder). Imports stay
# inside the fixtures, so collecting the suite imports no Trainer.
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _train(root, model, template, peft_conf, rows=800, steps=60, lr=3e-3):
    from finetuning.config.loading import load_config
    from finetuning.train.methods import sft
    from tests.helpers import minimal_sft, write_config

    data = write_jsonl(root / "data.jsonl", synthetic_chats(rows, seed=5))
    config = minimal_sft(model, data, peft_conf=peft_conf)
    config["data_conf"]["chat_template_name"] = template
    config["training_args"] = {
        "learning_rate": lr, "max_steps": steps, "save_strategy": "no", "output_dir": str(root / "out"),
        "logging_steps": 10,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 16, "max_per_device_train_batch_size": 16}
    sft.run(load_config(write_config(root / "c.yaml", config), "sft"))
    return root / "out"


@pytest.fixture(scope="session")
def trained_chatml(tmp_path_factory):
    """The `finetuning init` example, trained: it has learnt the synthetic chats and when to stop."""
    from finetuning.config.loading import load_config
    from finetuning.tools.init import init_example
    from finetuning.train.methods import sft

    root = tmp_path_factory.mktemp("example") / "example"
    sft.run(load_config(init_example(root), "sft"))
    return root / "checkpoints"


@pytest.fixture(scope="session")
def lora_new_tokens(tmp_path_factory, tiny_llama):
    """A chat-ml LoRA on a tokenizer without chat-ml tokens: new base model saved beside it."""
    peft_conf = {
        "peft_type": "LORA",
        "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": LORA_TARGETS},
    }
    return _train(
        tmp_path_factory.mktemp("lora-new"), tiny_llama, "chat-ml", peft_conf, steps=10, lr=1e-2
    )


@pytest.fixture(scope="session")
def lora_embeddings(tmp_path_factory, tiny_llama):
    """keep-original LoRA that also targets embed_tokens (PEFT then saves the embedding matrix)."""
    peft_conf = {
        "peft_type": "LORA",
        "peft_kwargs": {
            "r": 8,
            "lora_alpha": 16,
            "target_modules": [*LORA_TARGETS, "embed_tokens"],
        },
    }
    return _train(
        tmp_path_factory.mktemp("lora-emb"),
        tiny_llama,
        "keep-original",
        peft_conf,
        steps=10,
        lr=1e-2,
    )
