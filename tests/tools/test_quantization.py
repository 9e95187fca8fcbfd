"""QLoRA on CPU with bitsandbytes (4-bit and 8-bit), and the user errors around quantization."""

from __future__ import annotations

import pytest

from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from tests.e2e.test_sft import LORA
from tests.helpers import losses, minimal_sft, run_main, write_config

pytest.importorskip(
    "bitsandbytes", reason="bitsandbytes (the quant extra) is part of the dev install"
)

QUANT = {
    "nf4-double": {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                   "bnb_4bit_compute_dtype": "float32"},
    "fp4": {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
    "8bit": {"load_in_8bit": True},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nf4-double", pytest.param("8bit", marks=pytest.mark.full)])
def test_qlora_sft_trains_on_cpu(kind, tmp_path, tiny_llama, chat_data):
    out = tmp_path / "out"
    config = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["quant_conf"] = {"quantization_type": "bits-and-bytes", **QUANT[kind]}
    config["training_args"] = {
        "learning_rate": 1e-2, "max_steps": 16, "logging_steps": 4, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8}
    result = run_main("sft", write_config(tmp_path / "q.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    layer = "Linear4bit" if "4" in kind or "fp4" in kind else "Linear8bitLt"
    assert f"quantized: {layer}" in result.stderr
    history = losses(out)
    assert history[-1] < history[0] - 0.2, history
    assert (out / "checkpoint-final" / "adapter_model.safetensors").is_file()


def test_quantization_without_adapter_is_a_config_error():
    raw = minimal_sft(quant_conf={"quantization_type": "bits-and-bytes", "load_in_4bit": True})
    with pytest.raises(UserError, match="can only be trained through an adapter"):
        load_config_dict(raw, "sft")


def test_quantization_needs_a_mode():
    raw = minimal_sft(peft_conf=LORA, quant_conf={"quantization_type": "bits-and-bytes"})
    with pytest.raises(UserError, match="load_in_4bit: true or load_in_8bit: true"):
        load_config_dict(raw, "sft")


def test_quantization_with_added_tokens_fails_before_loading(tmp_path, tiny_llama, chat_data):
    config = minimal_sft(tiny_llama, chat_data, peft_conf=LORA)  # chat-ml adds two tokens
    config["quant_conf"] = {"quantization_type": "bits-and-bytes", **QUANT["fp4"]}
    result = run_main("sft", write_config(tmp_path / "q.yaml", config))
    assert result.returncode == 2
    assert "a quantized model cannot be resized" in result.stderr
    assert "Loading weights" not in result.stderr


def test_missing_bitsandbytes_is_a_user_error(monkeypatch):
    import importlib.util

    from finetuning.model.loading import bnb_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bitsandbytes" else real(name, *a),
    )
    conf = load_config_dict(
        minimal_sft(
            peft_conf=LORA, quant_conf={"quantization_type": "bits-and-bytes", "load_in_4bit": True}
        ),
        "sft",
    ).config.quant_conf
    with pytest.raises(UserError, match=r"pip install 'finetuning\[quant\]'"):
        bnb_config(conf)


def test_every_bnb_field_reaches_transformers():
    from finetuning.model.loading import bnb_config

    fields = {
        "load_in_4bit": True, "llm_int8_threshold": 5.0, "llm_int8_skip_modules": ["lm_head"],
        "llm_int8_enable_fp32_cpu_offload": True, "llm_int8_has_fp16_weight": True,
        "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True, "bnb_4bit_quant_storage": "uint8",
    }  # fmt: skip
    conf = load_config_dict(
        minimal_sft(peft_conf=LORA, quant_conf={"quantization_type": "bits-and-bytes", **fields}),
        "sft",
    ).config.quant_conf
    hf = bnb_config(conf)
    import torch

    assert hf.load_in_4bit and hf.llm_int8_threshold == 5.0
    assert hf.llm_int8_skip_modules == ["lm_head"]
    assert hf.llm_int8_enable_fp32_cpu_offload and hf.llm_int8_has_fp16_weight
    assert hf.bnb_4bit_compute_dtype == torch.bfloat16 and hf.bnb_4bit_quant_type == "nf4"
    assert hf.bnb_4bit_use_double_quant and hf.bnb_4bit_quant_storage == torch.uint8
