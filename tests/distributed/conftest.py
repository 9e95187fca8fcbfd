"""Shared pieces of the multi-process tests: the tiny config, the environment, the 1-process run."""

from __future__ import annotations

import os

import pytest

from tests.helpers import minimal_sft, run_main, write_config


def distributed_config(model, data, out):
    config = minimal_sft(model, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 2e-3, "max_steps": 8, "logging_steps": 1, "save_strategy": "steps",
        "save_steps": 4, "output_dir": str(out), "seed": 5,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 4}
    return config


def process_env(tmp_path):
    # One thread per process on this 2-core machine; a cache of this test's own.
    return {**os.environ, "OMP_NUM_THREADS": "1", "FINETUNING_CACHE_DIR": str(tmp_path / "cache")}


@pytest.fixture(scope="session")
def single_process_run(tmp_path_factory, tiny_llama, chat_data_small):
    """The 1-process reference run, in this process (only the multi-process runs need their own)."""
    root = tmp_path_factory.mktemp("one")
    out = root / "out"
    config = write_config(root / "one.yaml", distributed_config(tiny_llama, chat_data_small, out))
    result = run_main("sft", config, env=process_env(root))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch: total 8 = 1 processes x 4 per device x 2 accumulation" in result.stderr
    return out
