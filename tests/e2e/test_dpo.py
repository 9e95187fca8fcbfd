"""DPO end to end through the CLI on tiny local models (CPU)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.test_sft import LORA
from tests.helpers import minimal_dpo, minimal_sft, run_main, summary, write_config

pytestmark = pytest.mark.slow


def _train(tmp_path, config, name, method="dpo"):
    result = run_main(method, write_config(tmp_path / name, config))
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _margins(output_dir):
    return [
        h["rewards/margins"]
        for h in summary(output_dir)["history"]
        if "rewards/margins" in h and "loss" in h
    ]


def _dpo_config(model, data, out, **training_args):
    config = minimal_dpo(model, data)
    config["training_args"] = {
        "learning_rate": 5e-3, "num_train_epochs": 2, "logging_steps": 2, "save_strategy": "no",
        "output_dir": str(out), **training_args,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8}
    return config


def test_dpo_lora_margins_rise(tmp_path, tiny_llama, preference_data):
    out = tmp_path / "out"
    config = _dpo_config(tiny_llama, preference_data, out)
    config["peft_conf"] = LORA
    result = _train(tmp_path, config, "dpo.yaml")
    margins = _margins(out)
    assert margins[-1] > margins[0] + 0.5, margins
    assert (out / "checkpoint-final" / "adapter_model.safetensors").is_file()
    assert "rewards: accuracy" in result.stderr
    assert summary(out)["rewards"]["rewards/accuracies"] > 0.5
    # Packed by default: chosen and rejected in one row, per-example attention.
    assert "DPO: chosen and rejected packed into one row" in result.stderr
    assert summary(out)["attention"] == ["per-example sdpa"]


@pytest.mark.full
def test_full_parameter_dpo_with_ipo_from_an_sft_model(
    tmp_path, tiny_llama, chat_data, preference_data
):
    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    sft = minimal_sft(tiny_llama, chat_data)
    sft["training_args"] = {
        "learning_rate": 3e-3,
        "max_steps": 20,
        "save_strategy": "no",
        "output_dir": str(sft_out),
    }
    _train(tmp_path, sft, "sft.yaml", "sft")
    config = _dpo_config(
        sft_out / "checkpoint-final", preference_data, dpo_out, loss_type="ipo", beta=0.5
    )
    config["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.1}
    config["training_args"].update(eval_strategy="epoch")
    _train(tmp_path, config, "dpo.yaml")
    margins = _margins(dpo_out)
    assert margins[-1] > margins[0], margins
    history = summary(dpo_out)["history"]
    assert any("eval_rewards/margins" in h for h in history)
    assert (dpo_out / "checkpoint-final" / "model.safetensors").is_file()
    # The SFT model already had the chat-ml tokens: nothing new was added.
    tok = json.loads((dpo_out / "checkpoint-final" / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|im_end|>"


@pytest.mark.full
def test_dpo_continues_an_sft_adapter_with_precomputed_reference(
    tmp_path, tiny_llama, chat_data, preference_data
):
    sft_out, dpo_out = tmp_path / "sft", tmp_path / "dpo"
    sft = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)
    sft["data_conf"]["chat_template_name"] = "keep-original"
    sft["training_args"] = {
        "learning_rate": 1e-2,
        "max_steps": 10,
        "save_strategy": "no",
        "output_dir": str(sft_out),
    }
    _train(tmp_path, sft, "sft.yaml", "sft")
    config = _dpo_config(tiny_llama, preference_data, dpo_out, precompute_ref_log_probs=True)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["peft_conf"] = {
        "peft_type": "PRETRAINED_PEFT",
        "name_or_path": str(sft_out / "checkpoint-final"),
    }
    _train(tmp_path, config, "dpo.yaml")
    margins = _margins(dpo_out)
    assert margins[-1] > margins[0], margins
    assert (dpo_out / "checkpoint-final" / "adapter_model.safetensors").is_file()


def test_malformed_preference_row_exits_2(tmp_path, tiny_llama, preference_data):
    bad = tmp_path / "bad.jsonl"
    lines = preference_data.read_text().splitlines()[:3]
    row = json.loads(lines[1])
    del row["rejected_messages"]
    lines[1] = json.dumps(row)
    bad.write_text("\n".join(lines) + "\n")
    result = run_main("dpo", write_config(tmp_path / "c.yaml", minimal_dpo(tiny_llama, bad)))
    assert result.returncode == 2
    assert f"{bad}:2: missing `rejected_messages`" in result.stderr
    assert "Traceback" not in result.stderr
