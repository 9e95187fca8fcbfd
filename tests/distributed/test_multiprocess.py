"""The same tiny SFT config on 1 process and on 2 processes (torchrun, gloo on CPU)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import losses, minimal_sft, write_config

pytestmark = pytest.mark.slow


def _config(model, data, out):
    config = minimal_sft(model, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 2e-3, "max_steps": 8, "logging_steps": 1, "save_strategy": "steps",
        "save_steps": 4, "output_dir": str(out), "seed": 5,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 4}
    return config


def _env(tmp_path):
    # One thread per process on this 2-core machine; a cache of this test's own.
    return {**os.environ, "OMP_NUM_THREADS": "1", "FINETUNING_CACHE_DIR": str(tmp_path / "cache")}


def test_one_and_two_processes_train_the_same_run(tmp_path, tiny_llama, chat_data_small):
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(
        [sys.executable, "-m", "finetuning", "sft", str(write_config(tmp_path / "one.yaml", _config(tiny_llama, chat_data_small, one)))],
        capture_output=True, text=True, env=_env(tmp_path / "a"), timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "finetuning", "sft", str(write_config(tmp_path / "two.yaml", _config(tiny_llama, chat_data_small, two)))],
        capture_output=True, text=True, env=_env(tmp_path / "b"), timeout=600,
    )  # fmt: skip
    log = double.stdout + double.stderr
    assert double.returncode == 0, log[-4000:]
    # The batch formula keeps the total: half the accumulation per process.
    assert "batch: total 8 = 1 processes x 4 per device x 2 accumulation" in single.stderr
    assert "batch: total 8 = 2 processes x 4 per device x 1 accumulation" in log
    # Data prepared once: rank 0 encodes, rank 1 loads the cache rank 0 wrote.
    assert re.search(r"\[rank 0\].*data: \d+ rows encoded", log)
    assert re.search(r"\[rank 1\].*data: \d+ rows loaded from the cache", log)
    # Only one process wrote the shared files.
    for name in ("resolved_config.yaml", "data_preflight.txt"):
        writers = re.findall(rf"\[rank (\d)\].*wrote \S*{name}", log)
        assert writers == ["0"], (name, writers)
    assert sorted(p.name for p in two.glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-8",
        "checkpoint-final",
    ]
    # Same samples per optimizer step, so the loss curves match.
    assert len(losses(one)) == len(losses(two)) == 8
    assert losses(two) == pytest.approx(losses(one), rel=2e-3)
