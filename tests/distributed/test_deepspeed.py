"""DeepSpeed ZeRO-3 on CPU with 2 processes: full SFT matches DDP; LoRA and full DPO run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.distributed.conftest import distributed_config, process_env
from tests.helpers import losses, minimal_dpo, write_config

pytest.importorskip("deepspeed", reason="the deepspeed extra is part of CI's install")
pytestmark = [pytest.mark.slow, pytest.mark.full]  # multi-process: the full suite only

ZERO3 = {
    "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
}


def _torchrun(tmp_path, method, config):
    path = write_config(tmp_path / f"{method}.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "finetuning", method, str(path)],
        capture_output=True, text=True, env=process_env(tmp_path), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def test_zero3_full_sft_matches_one_process(
    single_process_run, tmp_path, tiny_llama, chat_data_small
):
    out = tmp_path / "zero3"
    config = distributed_config(tiny_llama, chat_data_small, out)
    config["training_args"]["deepspeed"] = ZERO3
    _torchrun(tmp_path, "sft", config)
    assert losses(out) == pytest.approx(losses(single_process_run), rel=2e-3)
    assert (out / "checkpoint-final" / "model.safetensors").is_file()  # gathered 16-bit weights


def test_zero3_lora_sft_and_full_dpo(tmp_path, tiny_llama, chat_data_small, preference_data):
    lora = tmp_path / "lora"
    config = distributed_config(tiny_llama, chat_data_small, lora)
    config["training_args"].update(deepspeed=ZERO3, max_steps=4)
    config["peft_conf"] = {
        "peft_type": "LORA",
        "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
    }
    _torchrun(tmp_path, "sft", config)
    assert (lora / "checkpoint-final" / "adapter_model.safetensors").is_file()
    dpo = tmp_path / "dpo"
    config = minimal_dpo(tiny_llama, preference_data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {"learning_rate": 1e-3, "max_steps": 4, "logging_steps": 1,
                               "save_strategy": "no", "output_dir": str(dpo), "deepspeed": ZERO3}  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 4}
    result = _torchrun(tmp_path, "dpo", config)
    assert "rewards: accuracy" in result.stdout + result.stderr
    assert (dpo / "checkpoint-final" / "model.safetensors").is_file()
