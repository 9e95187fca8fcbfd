"""Checking ``training_args`` and translating field names of older transformers / TRL releases.

Users' configs were written against transformers 4.57 and TRL 0.13. ``LEGACY`` is the one table
of what became of every field those releases had and today's dropped: mapped onto today's
equivalent, accepted as a no-op (with the reason logged), or rejected with what to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetuning.config.hf_fields import fields_for
from finetuning.config.training_ranges import cross_field_problems, range_problem
from finetuning.errors import Problem, did_you_mean

#: Owned by ``batchsize_conf``; the user may not set them, not even to their default.
BATCH_FIELDS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "per_gpu_train_batch_size",
    "per_gpu_eval_batch_size",
)

#: Keys of ``training_args`` that the engine consumes itself (never passed to transformers/TRL).
ENGINE_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "sft": {"logging_dir": ("str", "null")},
    "dpo": {
        "logging_dir": ("str", "null"),
        "max_prompt_length": ("int", "null"),
        "max_completion_length": ("int", "null"),
    },
    "grpo": {"logging_dir": ("str", "null")},
    # KTO, ORPO and SimPO: TRL 1.16's configs have no prompt limit and would truncate only in
    # their own tokenisation, which the engine replaces; the engine cuts prompts as for DPO.
    **{
        method: {
            "logging_dir": ("str", "null"),
            "max_prompt_length": ("int", "null"),
            "truncation_mode": ("str",),
        }
        for method in ("kto", "orpo", "simpo")
    },
    "reward": {"logging_dir": ("str", "null")},
    "pretrain": {"logging_dir": ("str", "null")},
}

#: Defaults every method built on a TRL config shares with DPO (TRL 1.x defaults bf16 and
#: activation checkpointing on, which slows a CPU run and differs from the SFT recipe).
_TRL_COMMON = {"bf16": False, "activation_checkpointing": False}
#: The engine's prompt limit for the preference methods without a reference in TRL's config.
_PROMPT = {"max_prompt_length": 512, "truncation_mode": "keep_end"}

#: Defaults of the established engine that differ from today's library defaults.
ENGINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "sft": {},
    "dpo": {
        "max_length": 2048,
        "max_prompt_length": 1536,
        "truncation_mode": "keep_end",  # TRL 0.13's default; TRL 1.x defaults to keep_start
        "bf16": False,  # TRL 1.x defaults to True, TRL 0.13 to False
        "activation_checkpointing": False,  # TRL 1.x defaults to True, TRL 0.13 to False
    },
    "kto": {**_PROMPT, **_TRL_COMMON},
    "orpo": {**_PROMPT, **_TRL_COMMON},
    # SimPO is CPO's simpo loss without CPO's behaviour-cloning term (the SimPO paper; TRL's
    # CPO docs: "loss_type='simpo' and cpo_alpha=0").
    "simpo": {"loss_type": "simpo", "cpo_alpha": 0.0, **_PROMPT, **_TRL_COMMON},
    "grpo": dict(_TRL_COMMON),
    # RewardConfig's own defaults differ from TrainingArguments' the same way DPOConfig's do;
    # the engine keeps the TrainingArguments ones, as for DPO (max_length: TRL's 1024).
    "reward": {"bf16": False, "activation_checkpointing": False},
    "pretrain": {},
}

_KIND_NAMES = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "dict",
    type(None): "null",
}


@dataclass(frozen=True)
class Legacy:
    """What became of a field that transformers 4.57 / TRL 0.13 had.

    Attributes:
        name: The old field name.
        methods: The methods it applies to; "*" for every method (the ``TrainingArguments``
            fields, which every library config inherits).
        reason: Why, in words, shown in the log or the error.
        mapping: For a mapped field: old value -> updates to apply, or None for a no-op value.
        accepted: For a field without equivalent: the values accepted as a no-op.
        error: True when any value outside ``accepted`` is an error.
    """

    name: str
    methods: tuple[str, ...]
    reason: str
    mapping: Callable[[Any], dict[str, Any] | None] | None = None
    accepted: tuple[Any, ...] = ()
    error: bool = False

    def applies_to(self, method: str) -> bool:
        """Whether ``method``'s ``training_args`` know this old field."""
        return "*" in self.methods or method in self.methods


EVERY = ("*",)  # every method: fields of transformers' TrainingArguments
DPO = ("dpo",)


def _rename(new: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {new: value}


def _if_true(updates: dict[str, Any]) -> Callable[[Any], dict[str, Any] | None]:
    return lambda value: dict(updates) if value else None


def _gone(name: str, accepted: tuple[Any, ...], reason: str, methods=EVERY) -> Legacy:
    return Legacy(name, methods, reason, accepted=accepted, error=True)


LEGACY: tuple[Legacy, ...] = (
    Legacy(
        "warmup_ratio",
        EVERY,
        "transformers 5 takes a ratio in [0, 1) in warmup_steps",
        mapping=_rename("warmup_steps"),
    ),
    Legacy(
        "gradient_checkpointing",
        EVERY,
        "renamed to activation_checkpointing in transformers 5",
        mapping=_rename("activation_checkpointing"),
    ),
    Legacy(
        "gradient_checkpointing_kwargs",
        EVERY,
        "renamed in transformers 5",
        mapping=_rename("activation_checkpointing_kwargs"),
    ),
    Legacy(
        "evaluation_strategy",
        EVERY,
        "renamed to eval_strategy in transformers 4.46",
        mapping=_rename("eval_strategy"),
    ),
    Legacy(
        "group_by_length",
        EVERY,
        "transformers 5 spells it train_sampling_strategy",
        mapping=_if_true({"train_sampling_strategy": "group_by_length"}),
    ),
    Legacy(
        "no_cuda", EVERY, "transformers 5 spells it use_cpu", mapping=_if_true({"use_cpu": True})
    ),
    Legacy(
        "adafactor",
        EVERY,
        "transformers 5 spells it optim",
        mapping=_if_true({"optim": "adafactor"}),
    ),
    Legacy(
        "include_inputs_for_metrics",
        EVERY,
        "transformers 5 spells it include_for_metrics",
        mapping=_if_true({"include_for_metrics": ["inputs"]}),
    ),
    Legacy(
        "torchdynamo",
        EVERY,
        "transformers 5 spells it torch_compile_backend",
        mapping=lambda v: {"torch_compile": True, "torch_compile_backend": v} if v else None,
    ),
    Legacy(
        "fsdp_min_num_params",
        EVERY,
        "moved into fsdp_config",
        mapping=lambda v: {"fsdp_config": {"min_num_params": v}} if v else None,
    ),
    Legacy(
        "fsdp_transformer_layer_cls_to_wrap",
        EVERY,
        "moved into fsdp_config",
        mapping=lambda v: {"fsdp_config": {"transformer_layer_cls_to_wrap": v}} if v else None,
    ),
    Legacy(
        "push_to_hub_model_id", EVERY, "renamed to hub_model_id", mapping=_rename("hub_model_id")
    ),
    Legacy("push_to_hub_token", EVERY, "renamed to hub_token", mapping=_rename("hub_token")),
    _gone(
        "push_to_hub_organization",
        (None,),
        "removed in transformers 5: give the full id as hub_model_id: ORGANIZATION/NAME",
    ),
    Legacy(
        "overwrite_output_dir",
        EVERY,
        "ignored: the engine never deletes outputs; resume_from_checkpoint decides whether a "
        "run continues from output_dir",
    ),
    Legacy(
        "include_tokens_per_second",
        EVERY,
        "ignored: tokens/s is always in the progress line and the summary",
    ),
    _gone(
        "save_safetensors",
        (True,),
        "checkpoints are always safetensors in transformers 5; pickle checkpoints "
        "(save_safetensors: false) are no longer written, remove the field",
    ),
    Legacy(
        "use_mps_device",
        EVERY,
        "ignored: transformers 5 uses an Apple GPU automatically",
    ),
    _gone(
        "fp16_backend",
        ("auto", "cpu_amp"),
        "removed: mixed precision always uses torch autocast (apex is gone)",
    ),
    _gone(
        "half_precision_backend",
        ("auto", "cpu_amp"),
        "removed: mixed precision always uses torch autocast (apex is gone)",
    ),
    _gone("fp16_opt_level", ("O1",), "removed with apex support: use bf16 or fp16"),
    _gone(
        "use_legacy_prediction_loop",
        (False,),
        "removed in transformers 5: remove the field",
    ),
    _gone("jit_mode_eval", (False,), "removed in transformers 5: use torch_compile instead"),
    _gone("past_index", (-1,), "removed in transformers 5: remove the field"),
    _gone(
        "ray_scope", ("last",), "removed in transformers 5 (hyperparameter search is not used here)"
    ),
    _gone("mp_parameters", ("",), "removed in transformers 5 (SageMaker model parallelism)"),
    _gone("tpu_num_cores", (None,), "TPU training is not supported: remove the field"),
    _gone("tpu_metrics_debug", (False,), "TPU training is not supported: remove the field"),
    # TRL 0.13 DPOConfig fields that TRL 1.x dropped.
    _gone(
        "max_target_length",
        (None,),
        "encoder-decoder models are not supported: remove the field",
        DPO,
    ),
    _gone(
        "reference_free",
        (False,),
        "TRL 1.x has no reference-free DPO; remove the field (the reference is the frozen "
        "initial policy; precompute_ref_log_probs: true saves its memory)",
        DPO,
    ),
    Legacy(
        "rpo_alpha",
        DPO,
        "TRL 1.x expresses RPO as loss_type [sigmoid, sft] with loss_weights",
        mapping=lambda v: (
            None if v is None else {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, v]}
        ),
    ),
    _gone(
        "force_use_ref_model",
        (False,),
        "removed in TRL 1.x: with an adapter the reference is the base with the adapter disabled",
        DPO,
    ),
    _gone("ref_adapter_name", (None,), "removed in TRL 1.x: remove the field", DPO),
    _gone("model_adapter_name", (None,), "removed in TRL 1.x: remove the field", DPO),
    _gone(
        "ref_model_init_kwargs",
        (None,),
        "removed: the reference model is loaded with run_conf.model_args like the policy",
        DPO,
    ),
    _gone("generate_during_eval", (False,), "removed in TRL 1.x: remove the field", DPO),
    _gone("is_encoder_decoder", (None, False), "encoder-decoder models are not supported", DPO),
    _gone(
        "padding_value",
        (None,),
        "removed: padding follows data_conf.missing_pad_token_strategy",
        DPO,
    ),
    _gone("label_pad_token_id", (-100,), "removed: padding labels are always -100", DPO),
    Legacy("use_num_logits_to_keep", DPO, "ignored: TRL 1.x has no such switch"),
)

LEGACY_BY_NAME: dict[str, Legacy] = {entry.name: entry for entry in LEGACY}


def translate_legacy(
    training_args: dict[str, Any], method: str
) -> tuple[dict[str, Any], list[str], list[Problem]]:
    """Map old field names onto today's, and add the engine's defaults.

    Args:
        training_args: The ``training_args`` section as the user wrote it.
        method: "sft" or "dpo".

    Returns:
        The translated dict, one note per mapped or ignored field (for the log), and the
        problems (fields that are no longer supported, or old and new name both set).
    """
    out: dict[str, Any] = {}
    notes: list[str] = []
    problems: list[Problem] = []
    for key, value in training_args.items():
        entry = LEGACY_BY_NAME.get(key)
        if entry is None or not entry.applies_to(method):
            out[key] = value
            continue
        where = f"training_args.{key}"
        if key == "warmup_ratio" and not (isinstance(value, int | float) and 0 <= value < 1):
            problems.append(Problem(f"must be a number in [0, 1), got {value!r}", where))
            continue
        if entry.error and value not in entry.accepted:
            problems.append(Problem(f"{value!r} is no longer supported: {entry.reason}", where))
            continue
        updates = entry.mapping(value) if entry.mapping else None
        if not updates:
            notes.append(f"{where}: {value!r} ignored ({entry.reason})")
            continue
        for new_key, new_value in updates.items():
            if new_key in training_args:
                problems.append(
                    Problem(f"set either {key} or {new_key}, not both ({entry.reason})", where)
                )
            elif isinstance(new_value, dict) and isinstance(out.get(new_key), dict):
                out[new_key] = {**out[new_key], **new_value}
            else:
                out[new_key] = new_value
        shown = ", ".join(f"{k}: {v!r}" for k, v in updates.items())
        notes.append(f"{where}: {value!r} mapped to {shown} ({entry.reason})")
    for key, value in ENGINE_DEFAULTS[method].items():
        out.setdefault(key, value)
    return out, notes, problems


def _kind(value: Any) -> str:
    return _KIND_NAMES.get(type(value), "other")


def check_training_args(training_args: dict[str, Any], method: str) -> list[Problem]:
    """Check translated ``training_args`` against the fields of the library (no torch import).

    Returns:
        One problem per forbidden, unknown, wrongly typed, out-of-choice or out-of-range field.
    """
    specs = fields_for(method)
    engine = ENGINE_FIELDS[method]
    allowed_names = [n for n in (*specs, *engine) if n not in BATCH_FIELDS]
    problems: list[Problem] = []
    for key, value in training_args.items():
        where = f"training_args.{key}"
        if not isinstance(key, str):
            problems.append(
                Problem(
                    f"the key {key!r} is not a string, so not the name of a training argument "
                    "(quote it in the YAML if a name was meant)",
                    where,
                )
            )
            continue
        if key in BATCH_FIELDS:
            problems.append(
                Problem(
                    "may not be set: batchsize_conf owns the batch size and accumulation "
                    "(set batchsize_conf.total_train_batch_size / max_per_device_train_batch_size"
                    " / per_device_eval_batch_size instead)",
                    where,
                )
            )
            continue
        if key in engine:
            kinds = engine[key]
            choices: tuple[str, ...] = ()
        elif key in specs:
            kinds, choices = specs[key].kinds, specs[key].choices
        else:
            problems.append(
                Problem(
                    "Additional properties are not allowed: unknown training argument",
                    where,
                    did_you_mean(key, allowed_names),
                )
            )
            continue
        kind = _kind(value)
        ok = not kinds or kind in kinds or (kind == "int" and "float" in kinds)
        if not ok:
            problems.append(Problem(f"expected {' or '.join(kinds)}, got {kind} {value!r}", where))
            continue
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if choices and isinstance(v, str) and v not in choices]
        if bad:
            problems.append(
                Problem(
                    f"{bad[0]!r} is not allowed (allowed: {', '.join(choices)})",
                    where,
                    did_you_mean(bad[0], choices),
                )
            )
        elif out_of_range := range_problem(key, value, method):
            problems.append(out_of_range)
    if not problems:
        problems += cross_field_problems(training_args)
    return problems


def training_arg_default(method: str, name: str) -> Any:
    """The value of ``training_args.name`` when the config leaves it out.

    The engine's default where it has one (``ENGINE_DEFAULTS``), else the library's (the field
    snapshot): the one place the run, the preflight and the docs read a default from.
    """
    if name in ENGINE_DEFAULTS[method]:
        return ENGINE_DEFAULTS[method][name]
    return fields_for(method)[name].default


def training_args_defaults(method: str) -> dict[str, Any]:
    """Today's library defaults plus the engine's, for displaying a fully resolved config."""
    defaults = {
        name: spec.default
        for name, spec in fields_for(method).items()
        if name not in BATCH_FIELDS and name not in LEGACY_BY_NAME
    }
    defaults["logging_dir"] = None
    translated, _, _ = translate_legacy({}, method)
    defaults.update(translated)
    return defaults
