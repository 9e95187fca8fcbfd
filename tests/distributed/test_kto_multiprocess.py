"""KTO on 2 processes (torchrun, gloo on CPU): one short run of a preference method."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.distributed.conftest import process_env
from tests.e2e.test_preference_methods import LORA
from tests.helpers import minimal_dpo, summary, write_config

pytestmark = [pytest.mark.slow, pytest.mark.full]  # multi-process: the full suite only


def test_kto_trains_on_two_processes(tmp_path, tiny_llama, preference_data):
    out = tmp_path / "out"
    config = minimal_dpo(tiny_llama, preference_data)
    config["method"] = "kto"
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 5e-3, "max_steps": 2, "logging_steps": 1, "output_dir": str(out),
        "max_length": 96,
    }  # fmt: skip
    # KTO needs 2 examples per device (its KL term pairs each with a neighbour).
    config["batchsize_conf"] = {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2}
    config["peft_conf"] = LORA
    path = write_config(tmp_path / "kto.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "finetuning", "kto", str(path)],
        capture_output=True, text=True, env=process_env(tmp_path), timeout=600,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "batch: total 4 = 2 processes x 2 per device x 1 accumulation" in log
    assert re.search(r"\[rank 1\].*data: \d+ rows loaded from the cache", log)
    writers = re.findall(r"\[rank (\d)\].*wrote \S*data_preflight.txt", log)
    assert writers == ["0"], writers
    result = summary(out)
    assert result["steps"] == 2
    # TRL gathers the KL estimate over both processes; it reaches the summary.
    assert "kl" in result["rewards"] and result["rewards"]["kl"] >= 0
    assert (out / "checkpoint-final" / "adapter_model.safetensors").is_file()
