"""Fields of transformers 4.57 / TRL 0.13: every one is mapped, a logged no-op, or a clear error."""

from __future__ import annotations

import os

import pytest
import yaml

from finetuning.config.loading import load_config, load_config_dict
from finetuning.config.training_args import LEGACY_BY_NAME
from finetuning.errors import UserError
from tests.conftest import REFERENCE_CONFIGS
from tests.helpers import minimal_dpo, minimal_sft

# field -> (method, value, expected): a dict of mapped fields, "noop", or an error substring.
OUTCOMES = {
    "warmup_ratio": ("sft", 0.1, {"warmup_steps": 0.1}),
    "logging_dir": ("sft", "/tmp/logs", {"logging_dir": "/tmp/logs"}),  # engine-owned
    "overwrite_output_dir": ("sft", True, "noop"),
    "group_by_length": ("sft", True, {"train_sampling_strategy": "group_by_length"}),
    "no_cuda": ("sft", True, {"use_cpu": True}),
    "adafactor": ("sft", True, {"optim": "adafactor"}),
    "include_tokens_per_second": ("sft", True, "noop"),
    "include_inputs_for_metrics": ("sft", True, {"include_for_metrics": ["inputs"]}),
    "save_safetensors": ("sft", False, "pickle checkpoints"),
    "torchdynamo": (
        "sft",
        "inductor",
        {"torch_compile": True, "torch_compile_backend": "inductor"},
    ),
    "fsdp_min_num_params": ("sft", 1000, {"fsdp_config": {"min_num_params": 1000}}),
    "fsdp_transformer_layer_cls_to_wrap": (
        "sft",
        "LlamaDecoderLayer",
        {"fsdp_config": {"transformer_layer_cls_to_wrap": "LlamaDecoderLayer"}},
    ),
    "push_to_hub_model_id": ("sft", "me/model", {"hub_model_id": "me/model"}),
    "push_to_hub_organization": ("sft", "org", "hub_model_id: ORGANIZATION/NAME"),
    "push_to_hub_token": ("sft", "tok", {"hub_token": "tok"}),
    "per_gpu_train_batch_size": ("sft", 8, "batchsize_conf owns"),
    "per_gpu_eval_batch_size": ("sft", 8, "batchsize_conf owns"),
    "fp16_backend": ("sft", "apex", "apex is gone"),
    "half_precision_backend": ("sft", "apex", "apex is gone"),
    "fp16_opt_level": ("sft", "O2", "apex support"),
    "use_mps_device": ("sft", True, "noop"),
    "use_legacy_prediction_loop": ("sft", True, "removed in transformers 5"),
    "jit_mode_eval": ("sft", True, "torch_compile"),
    "past_index": ("sft", 2, "removed in transformers 5"),
    "ray_scope": ("sft", "all", "hyperparameter search"),
    "mp_parameters": ("sft", "x", "SageMaker"),
    "tpu_num_cores": ("sft", 8, "TPU training is not supported"),
    "tpu_metrics_debug": ("sft", True, "TPU training is not supported"),
    "gradient_checkpointing": ("sft", True, {"activation_checkpointing": True}),
    "gradient_checkpointing_kwargs": (
        "sft",
        {"use_reentrant": True},
        {"activation_checkpointing_kwargs": {"use_reentrant": True}},
    ),
    "max_prompt_length": ("dpo", 256, {"max_prompt_length": 256}),  # engine-owned truncation
    "max_completion_length": ("dpo", 128, {"max_completion_length": 128}),
    "max_target_length": ("dpo", 64, "encoder-decoder"),
    "reference_free": ("dpo", True, "no reference-free DPO"),
    "rpo_alpha": ("dpo", 0.5, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}),
    "force_use_ref_model": ("dpo", True, "adapter disabled"),
    "ref_adapter_name": ("dpo", "ref", "removed in TRL 1.x"),
    "model_adapter_name": ("dpo", "train", "removed in TRL 1.x"),
    "ref_model_init_kwargs": ("dpo", {"dtype": "bfloat16"}, "run_conf.model_args"),
    "generate_during_eval": ("dpo", True, "removed in TRL 1.x"),
    "is_encoder_decoder": ("dpo", True, "encoder-decoder"),
    "padding_value": ("dpo", 0, "missing_pad_token_strategy"),
    "label_pad_token_id": ("dpo", -1, "always -100"),
    "use_num_logits_to_keep": ("dpo", True, "noop"),
}

# Values the old release defaulted to are accepted as no-ops for fields with no equivalent.
ACCEPTED_DEFAULTS = {
    "save_safetensors": True, "fp16_backend": "auto", "half_precision_backend": "auto",
    "fp16_opt_level": "O1", "use_legacy_prediction_loop": False, "jit_mode_eval": False,
    "past_index": -1, "ray_scope": "last", "mp_parameters": "", "tpu_num_cores": None,
    "tpu_metrics_debug": False, "max_target_length": None, "reference_free": False,
    "force_use_ref_model": False, "ref_adapter_name": None, "model_adapter_name": None,
    "ref_model_init_kwargs": None, "generate_during_eval": False, "is_encoder_decoder": None,
    "padding_value": None, "label_pad_token_id": -100, "push_to_hub_organization": None,
}  # fmt: skip


def _load(method, training_args):
    maker = minimal_sft if method == "sft" else minimal_dpo
    return load_config_dict(maker(training_args=training_args), method)


@pytest.mark.parametrize("field", OUTCOMES)
def test_legacy_field_outcome(field):
    method, value, expected = OUTCOMES[field]
    if isinstance(expected, dict):
        loaded = _load(method, {field: value})
        for key, new in expected.items():
            assert loaded.config.training_args[key] == new
        if field in LEGACY_BY_NAME:
            assert field not in loaded.config.training_args
            assert any(n.startswith(f"training_args.{field}:") for n in loaded.notes)
    elif expected == "noop":
        loaded = _load(method, {field: value})
        assert field not in loaded.config.training_args
        assert any(f"training_args.{field}: {value!r} ignored" in n for n in loaded.notes)
    else:
        with pytest.raises(UserError) as info:
            _load(method, {field: value})
        text = info.value.format()
        assert f"training_args.{field}" in text
        assert expected in text


@pytest.mark.parametrize("field", ACCEPTED_DEFAULTS)
def test_old_default_values_are_noops(field):
    method = "dpo" if LEGACY_BY_NAME[field].methods == ("dpo",) else "sft"
    loaded = _load(method, {field: ACCEPTED_DEFAULTS[field]})
    assert field not in loaded.config.training_args
    assert any(n.startswith(f"training_args.{field}:") for n in loaded.notes)


def test_every_legacy_entry_has_an_outcome_test():
    assert set(LEGACY_BY_NAME) <= set(OUTCOMES) | {"evaluation_strategy"}


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("warmup_ratio", "warmup_steps", 0.1),
        ("gradient_checkpointing", "activation_checkpointing", True),
    ],
)
def test_old_and_new_name_together_is_an_error(old, new, value):
    with pytest.raises(UserError, match=f"set either {old} or {new}, not both"):
        _load("sft", {old: value, new: value})


def test_new_names_are_accepted_directly():
    loaded = _load("sft", {"warmup_steps": 0.1, "activation_checkpointing": True})
    assert loaded.config.training_args["warmup_steps"] == 0.1
    assert loaded.notes == []


@pytest.mark.parametrize("ratio", [1.0, -0.1, "x"])
def test_warmup_ratio_must_be_a_ratio(ratio):
    with pytest.raises(UserError, match=r"training_args.warmup_ratio: must be a number in"):
        _load("sft", {"warmup_ratio": ratio})


def _reference_env(tmp_path):
    return {
        "MODEL_DIR": str(tmp_path / "model"),
        "DATA_DIR": str(tmp_path),
        "MLFLOW_URI": str(tmp_path / "ml"),
        "OUTPUT_DIR": str(tmp_path / "out"),
    }


@pytest.mark.parametrize("path", sorted(REFERENCE_CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_reference_configs_validate_unchanged(path, tmp_path, monkeypatch):
    for key, value in _reference_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    expanded = tmp_path / path.name
    expanded.write_text(os.path.expandvars(path.read_text()))
    method = yaml.safe_load(expanded.read_text()).get("method", "sft")
    loaded = load_config(expanded, method)
    args = loaded.config.training_args
    assert "warmup_ratio" not in args
    raw_args = yaml.safe_load(expanded.read_text())["training_args"]
    if "warmup_ratio" in raw_args:
        assert args["warmup_steps"] == raw_args["warmup_ratio"]
    if "gradient_checkpointing" in raw_args:
        assert args["activation_checkpointing"] == raw_args["gradient_checkpointing"]
