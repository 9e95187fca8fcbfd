"""The config models against config-reference.txt: every section, field, default and enum value."""

from __future__ import annotations

import pytest

from finetuning.config import data, experiment, peft, quantization, run, tracking, training
from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from tests.helpers import minimal_dpo, minimal_sft

# (model, field) -> default, transcribed from ../shared/spec/config-reference.txt.
REFERENCE_DEFAULTS = {
    (data.AutoSplitDataInput, "data_type"): "ChatConversation",
    (data.AutoSplitDataInput, "ratio"): 0.2,
    (data.AutoSplitDataInput, "seed"): 1289525893,
    (training.BatchsizeConfig, "per_device_eval_batch_size"): None,
    (quantization.BnBQuantizationConfig, "quantization_type"): "bits-and-bytes",
    (quantization.BnBQuantizationConfig, "load_in_8bit"): False,
    (quantization.BnBQuantizationConfig, "load_in_4bit"): False,
    (quantization.BnBQuantizationConfig, "llm_int8_threshold"): 6.0,
    (quantization.BnBQuantizationConfig, "llm_int8_skip_modules"): None,
    (quantization.BnBQuantizationConfig, "llm_int8_enable_fp32_cpu_offload"): False,
    (quantization.BnBQuantizationConfig, "llm_int8_has_fp16_weight"): False,
    (quantization.BnBQuantizationConfig, "bnb_4bit_compute_dtype"): None,
    (quantization.BnBQuantizationConfig, "bnb_4bit_quant_type"): "fp4",
    (quantization.BnBQuantizationConfig, "bnb_4bit_use_double_quant"): False,
    (quantization.BnBQuantizationConfig, "bnb_4bit_quant_storage"): None,
    (data.ChatTrainValidConfig, "chat_template_name"): "mistral-with-system",
    (data.ChatTrainValidConfig, "padding_side"): "right",
    (data.ChatTrainValidConfig, "missing_pad_token_strategy"): "bos-repurpose",
    (data.ConcatenationDataInput, "data_type"): "ChatConversation",
    (tracking.FinetuningTrackingConfig, "run_id"): None,
    (tracking.FinetuningTrackingConfig, "run_name"): None,
    (tracking.FinetuningTrackingConfig, "hf_mlflow_log_artifacts"): "False",
    (peft.GenericPeftConfig, "task_type"): "CAUSAL_LM",
    (run.ModelArguments, "torch_dtype"): "auto",
    (run.ModelArguments, "low_cpu_mem_usage"): False,
    (run.ModelArguments, "use_cache"): True,
    (run.ModelArguments, "force_download"): False,
    (run.ModelArguments, "local_files_only"): False,
    (run.ModelArguments, "resume_download"): False,
    (run.ModelArguments, "revision"): "main",
    (run.ModelArguments, "code_revision"): "main",
    (run.ModelArguments, "trust_remote_code"): False,
    (quantization.NoQuantizationConfig, "quantization_type"): "no-quantization",
    (data.NoneDataInput, "data_type"): "ChatConversation",
    (training.Overrides, "lr_multiplier"): 1.0,
    (training.Overrides, "lr_batch_size_scaling"): "none",
    (run.RunConfig, "model"): "/local_resources/basemodel",
    (run.RunConfig, "tokenizer"): None,
    (run.RunConfig, "use_fast_tokenizer"): True,
    (run.RunConfig, "final_checkpoint_name"): "checkpoint-final",
    (run.RunConfig, "determinism"): "no",
    (training.SFTArguments, "max_seq_length"): 2048,
    (training.SFTArguments, "save_name_if_new_basemodel"): "checkpoint-new-basemodel",
    (training.SFTArguments, "train_on_completions_only"): False,
    (data.WeightedDatasetDefinition, "sampling_weight"): 1.0,
    (data.WeightedMixDataInput, "data_type"): "ChatConversation",
    (data.WeightedMixDataInput, "seed"): 19851243,
    (experiment.SFTExperimentConfig, "method"): "sft",
}

REFERENCE_MODEL_ARGS_DEFAULT = {
    "torch_dtype": "auto", "device_map": "auto", "max_memory": None, "low_cpu_mem_usage": False,
    "attn_implementation": None, "offload_folder": None, "offload_state_dict": None,
    "offload_buffers": None, "use_cache": True, "cache_dir": None, "force_download": False,
    "local_files_only": False, "proxies": None, "resume_download": False, "revision": "main",
    "code_revision": "main", "subfolder": None, "token": None, "use_safetensors": None,
    "variant": None, "trust_remote_code": False,
}  # fmt: skip

# Every property of every section in config-reference.txt.
REFERENCE_FIELDS = {
    experiment.SFTExperimentConfig: "data_conf training_args batchsize_conf peft_conf run_conf "
    "sft_args method overrides tracking quant_conf",
    data.AutoSplitDataInput: "type data_type ratio seed",
    training.BatchsizeConfig: "total_train_batch_size max_per_device_train_batch_size "
    "per_device_eval_batch_size",
    quantization.BnBQuantizationConfig: "quantization_type load_in_8bit load_in_4bit "
    "llm_int8_threshold llm_int8_skip_modules llm_int8_enable_fp32_cpu_offload "
    "llm_int8_has_fp16_weight bnb_4bit_compute_dtype bnb_4bit_quant_type "
    "bnb_4bit_use_double_quant bnb_4bit_quant_storage",
    data.ChatTrainValidConfig: "training_data validation_data chat_template_name padding_side "
    "missing_pad_token_strategy",
    data.ConcatenationDataInput: "type datasets data_type",
    data.DatasetDefinition: "path",
    tracking.FinetuningTrackingConfig: "mlflow_server_uri experiment_name run_id run_name "
    "hf_mlflow_log_artifacts",
    peft.GenericPeftConfig: "peft_type task_type peft_kwargs",
    run.ModelArguments: " ".join(REFERENCE_MODEL_ARGS_DEFAULT),
    peft.NoPeftConfig: "peft_type",
    quantization.NoQuantizationConfig: "quantization_type",
    data.NoneDataInput: "type data_type",
    training.Overrides: "lr_multiplier lr_batch_size_scaling",
    peft.PretrainedPeftConfig: "peft_type name_or_path",
    run.RunConfig: "model model_args tokenizer use_fast_tokenizer resume_from_checkpoint "
    "final_checkpoint_name determinism",
    training.SFTArguments: "max_seq_length save_name_if_new_basemodel train_on_completions_only",
    data.WeightedDatasetDefinition: "path sampling_weight",
    data.WeightedMixDataInput: "type datasets data_type seed",
}

PEFT_TYPES = (
    "PROMPT_TUNING MULTITASK_PROMPT_TUNING P_TUNING PREFIX_TUNING LORA ADALORA BOFT "
    "ADAPTION_PROMPT IA3 LOHA LOKR OFT POLY LN_TUNING VERA FOURIERFT XLORA HRA VBLORA"
).split()


@pytest.mark.parametrize(("key", "expected"), REFERENCE_DEFAULTS.items(), ids=lambda x: str(x))
def test_reference_default(key, expected):
    model, name = key
    default = model.model_fields[name].default
    assert getattr(default, "value", default) == expected


@pytest.mark.parametrize("model", REFERENCE_FIELDS, ids=lambda m: m.__name__)
def test_every_reference_field_exists(model):
    missing = set(REFERENCE_FIELDS[model].split()) - set(model.model_fields)
    assert not missing


def test_model_args_default_matches_reference():
    assert run.RunConfig().model_args.model_dump() == REFERENCE_MODEL_ARGS_DEFAULT


def test_top_level_defaults():
    cfg = experiment.SFTExperimentConfig.model_validate(minimal_sft())
    assert cfg.overrides.model_dump() == {"lr_multiplier": 1.0, "lr_batch_size_scaling": "none"}
    assert cfg.quant_conf.model_dump() == {"quantization_type": "no-quantization"}
    assert cfg.tracking is None
    assert cfg.run_conf.resume_from_checkpoint is False


def test_enums_are_complete():
    assert [t.value for t in peft.PeftType] == PEFT_TYPES
    assert len(PEFT_TYPES) == 19
    assert {t.value for t in peft.TaskType} == {
        "SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION"
    }  # fmt: skip
    assert {t.value for t in data.ChatTemplateName} == {
        "mistral-with-system", "chat-ml", "poro", "keep-original", "simplified-llama31"
    }  # fmt: skip
    assert {s.value for s in data.MissingPadTokenStrategy} == {
        "eos-repurpose", "bos-repurpose", "unk-repurpose", "unk-convert-to-eos"
    }  # fmt: skip


@pytest.mark.parametrize("peft_type", PEFT_TYPES)
def test_every_peft_type_is_accepted(peft_type):
    needed = {key: 4 for key in peft.REQUIRED_KWARGS.get(peft_type, ())}
    conf = {"peft_type": peft_type, "peft_kwargs": needed}
    cfg = load_config_dict(minimal_sft(peft_conf=conf), "sft").config
    assert cfg.peft_conf.peft_type == peft_type
    assert isinstance(cfg.peft_conf, peft.GenericPeftConfig)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("auto", "auto"), ("/x/ckpt-3", "/x/ckpt-3")],
)
def test_resume_from_checkpoint_forms(value, expected):
    raw = minimal_sft(run_conf={"model": "/m", "resume_from_checkpoint": value})
    assert load_config_dict(raw, "sft").config.run_conf.resume_from_checkpoint == expected


@pytest.mark.parametrize("choice", ["none", "sqrt", "linear"])
def test_lr_scaling_choices(choice):
    raw = minimal_sft(overrides={"lr_batch_size_scaling": choice})
    assert load_config_dict(raw, "sft").config.overrides.lr_batch_size_scaling == choice


@pytest.mark.parametrize("level", ["no", "half", "full"])
def test_determinism_levels(level):
    raw = minimal_sft(run_conf={"model": "/m", "determinism": level})
    assert load_config_dict(raw, "sft").config.run_conf.determinism == level


@pytest.mark.parametrize("handling", ["filter", "truncate"])
def test_length_handling(handling):
    raw = minimal_sft(sft_args={"length_handling": handling})
    assert load_config_dict(raw, "sft").config.sft_args.length_handling == handling


def test_dpo_config_with_dpo_fields():
    raw = minimal_dpo(
        training_args={
            "beta": 0.2,
            "loss_type": "ipo",
            "max_prompt_length": 512,
            "max_length": 1024,
        }
    )
    cfg = load_config_dict(raw, "dpo").config
    assert cfg.method == "dpo"
    assert cfg.training_args["beta"] == 0.2
    assert cfg.training_args["loss_type"] == "ipo"
    assert cfg.training_args["max_prompt_length"] == 512
    assert cfg.sft_args is None


def test_dpo_defaults_of_the_established_engine():
    cfg = load_config_dict(minimal_dpo(training_args={}), "dpo").config
    assert cfg.training_args["max_length"] == 2048
    assert cfg.training_args["max_prompt_length"] == 1536
    assert cfg.training_args["bf16"] is False


def test_dpo_rejects_sft_args():
    raw = minimal_dpo()
    raw["sft_args"] = {"max_seq_length": 10}
    with pytest.raises(UserError, match=r"sft_args: must be absent or null for dpo"):
        load_config_dict(raw, "dpo")


def test_dpo_accepts_null_sft_args():
    raw = minimal_dpo()
    raw["sft_args"] = None
    assert load_config_dict(raw, "dpo").config.sft_args is None


def test_dpo_rejects_unknown_loss_type():
    with pytest.raises(UserError, match=r"training_args.loss_type: 'ipoo' is not allowed"):
        load_config_dict(minimal_dpo(training_args={"loss_type": "ipoo"}), "dpo")


def test_sft_requires_sft_args():
    raw = minimal_sft()
    del raw["sft_args"]
    with pytest.raises(UserError, match=r"sft_args: required key is missing"):
        load_config_dict(raw, "sft")


def test_model_args_pass_unknown_keys_through():
    raw = minimal_sft(run_conf={"model": "/m", "model_args": {"rope_scaling": {"type": "x"}}})
    args = load_config_dict(raw, "sft").config.run_conf.model_args
    assert args.model_extra == {"rope_scaling": {"type": "x"}}


def test_peft_kwargs_are_free():
    raw = minimal_sft(peft_conf={"peft_type": "LORA", "peft_kwargs": {"anything": 1}})
    assert load_config_dict(raw, "sft").config.peft_conf.peft_kwargs == {"anything": 1}


def test_method_mismatch_is_an_error():
    raw = minimal_sft(method="dpo")
    with pytest.raises(UserError, match="the config says method: 'dpo' but the command is 'sft'"):
        load_config_dict(raw, "sft")


def test_data_type_is_set_by_the_method_with_a_note():
    raw = minimal_dpo()
    raw["data_conf"]["training_data"]["data_type"] = "ChatConversation"
    loaded = load_config_dict(raw, "dpo")
    assert loaded.config.data_conf.training_data.data_type == "DirectPreference"
    assert any("overwritten with 'DirectPreference'" in n for n in loaded.notes)


def test_config_is_frozen():
    cfg = load_config_dict(minimal_sft(), "sft").config
    with pytest.raises(Exception, match="frozen"):
        cfg.method = "dpo"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank_pattern": ["q_proj"]}, "peft_kwargs.rank_pattern must be a mapping"),
        ({"alpha_pattern": {"q_proj": "x"}}, "peft_kwargs.alpha_pattern must be a mapping"),
        ({"target_modules": 5}, "peft_kwargs.target_modules must be a module name"),
        ({"target_modules": ["q_proj", 3]}, "peft_kwargs.target_modules must be"),
        ({"modules_to_save": "lm_head"}, "peft_kwargs.modules_to_save must be a list"),
        ({"r": 0}, "peft_kwargs.r must be a whole number >= 1"),
        ({"lora_dropout": 1.5}, "peft_kwargs.lora_dropout must be a number in [0, 1)"),
    ],
)
def test_peft_kwargs_of_the_wrong_shape_name_the_key(kwargs, message):
    config = minimal_sft(peft_conf={"peft_type": "LORA", "peft_kwargs": kwargs})
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    assert f"peft_conf: {message}" in info.value.format()


@pytest.mark.parametrize("peft_type", sorted(peft.REQUIRED_KWARGS))
def test_prompt_learning_types_name_their_missing_kwarg(peft_type):
    config = minimal_sft(peft_conf={"peft_type": peft_type})
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    missing = peft.REQUIRED_KWARGS[peft_type][0]
    assert f"{peft_type} needs peft_kwargs.{missing}" in info.value.format()


def test_peft_kwargs_of_the_right_shape_are_accepted():
    kwargs = {
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
        "rank_pattern": {"q_proj": 4},
        "layers_to_transform": [0, 1],
    }
    config = minimal_sft(peft_conf={"peft_type": "LORA", "peft_kwargs": kwargs})
    assert load_config_dict(config, "sft").config.peft_conf.peft_kwargs == kwargs


@pytest.mark.parametrize("key", ["torch_dtype", "dtype"])
def test_an_unknown_dtype_is_a_config_error(key):
    config = minimal_sft(run_conf={"model": "/m", "model_args": {key: "float8"}})
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    assert f"{key}: 'float8' is not a dtype a model can be loaded in" in info.value.format()
    ok = minimal_sft(run_conf={"model": "/m", "model_args": {key: "bfloat16"}})
    load_config_dict(ok, "sft")
