"""Adapter configuration: full fine-tuning, a new PEFT adapter, or a pretrained one."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from finetuning.config.strict import StrictModel


class PeftType(StrEnum):
    """The PEFT adapter types."""

    PROMPT_TUNING = "PROMPT_TUNING"
    MULTITASK_PROMPT_TUNING = "MULTITASK_PROMPT_TUNING"
    P_TUNING = "P_TUNING"
    PREFIX_TUNING = "PREFIX_TUNING"
    LORA = "LORA"
    ADALORA = "ADALORA"
    BOFT = "BOFT"
    ADAPTION_PROMPT = "ADAPTION_PROMPT"
    IA3 = "IA3"
    LOHA = "LOHA"
    LOKR = "LOKR"
    OFT = "OFT"
    POLY = "POLY"
    LN_TUNING = "LN_TUNING"
    VERA = "VERA"
    FOURIERFT = "FOURIERFT"
    XLORA = "XLORA"
    HRA = "HRA"
    VBLORA = "VBLORA"


class TaskType(StrEnum):
    """The PEFT task types."""

    SEQ_CLS = "SEQ_CLS"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"
    CAUSAL_LM = "CAUSAL_LM"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pattern(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and _number(v) for k, v in value.items()
    )


#: The shapes of the PEFT kwargs a config most often gets wrong: kwarg -> (what is allowed, check).
KWARG_SHAPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "target_modules": (
        "a module name, a list of module names, or 'all-linear'",
        lambda v: v is None or isinstance(v, str) or _names(v),
    ),
    "exclude_modules": (
        "a module name or a list of module names",
        lambda v: v is None or isinstance(v, str) or _names(v),
    ),
    "modules_to_save": ("a list of module names", lambda v: v is None or _names(v)),
    "rank_pattern": ("a mapping of module name patterns to ranks", _pattern),
    "alpha_pattern": ("a mapping of module name patterns to alphas", _pattern),
    "layers_to_transform": (
        "a layer index or a list of layer indices",
        lambda v: (
            v is None
            or (isinstance(v, int) and not isinstance(v, bool))
            or (
                isinstance(v, list)
                and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
            )
        ),
    ),
    "r": (
        "a whole number >= 1",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    ),
    "lora_alpha": ("a number", _number),
    "lora_dropout": ("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    "num_virtual_tokens": (
        "a whole number >= 1",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    ),
}

_PROMPT_LEARNING = ("num_virtual_tokens",)
#: Kwargs PEFT declares with default None but needs: the adapter cannot be built without them.
REQUIRED_KWARGS: dict[str, tuple[str, ...]] = {
    "PROMPT_TUNING": _PROMPT_LEARNING,
    "MULTITASK_PROMPT_TUNING": _PROMPT_LEARNING,
    "P_TUNING": _PROMPT_LEARNING,
    "PREFIX_TUNING": _PROMPT_LEARNING,
    "ADAPTION_PROMPT": ("adapter_len", "adapter_layers"),
}


class NoPeftConfig(StrictModel):
    """No adapter: full-parameter fine-tuning."""

    peft_type: Literal["NO_PEFT"]


class GenericPeftConfig(StrictModel):
    """A newly initialised PEFT adapter of any type.

    PEFT's config class for ``peft_type`` is built from ``task_type`` and ``peft_kwargs`` (see
    PEFT's documentation for the kwargs of each type), e.g.
    ``{peft_type: LORA, peft_kwargs: {r: 16, lora_alpha: 32, target_modules: [q_proj, v_proj]}}``.
    A kwarg PEFT rejects is reported before training starts.
    """

    peft_type: Literal[tuple(PeftType)]  # type: ignore[valid-type]
    """The adapter type (one of PeftType)."""
    task_type: TaskType = TaskType.CAUSAL_LM
    peft_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of PEFT's config class for this type."""

    @model_validator(mode="after")
    def _check_kwargs(self) -> GenericPeftConfig:
        # PEFT stores these unchecked and fails with a traceback once the model has loaded.
        problems = [
            f"peft_kwargs.{key} must be {shape}, got {self.peft_kwargs[key]!r}"
            for key, (shape, ok) in KWARG_SHAPES.items()
            if key in self.peft_kwargs and not ok(self.peft_kwargs[key])
        ]
        missing = [k for k in REQUIRED_KWARGS.get(self.peft_type, ()) if k not in self.peft_kwargs]
        if missing:
            problems.append(
                f"{self.peft_type} needs peft_kwargs.{', peft_kwargs.'.join(missing)} "
                "(PEFT has no default for it)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PretrainedPeftConfig(StrictModel):
    """Continue training a pretrained adapter (its config and weights)."""

    peft_type: Literal["PRETRAINED_PEFT"]
    name_or_path: str
    """HF ID or path to the pretrained peft."""


PeftConfig = Annotated[
    NoPeftConfig | PretrainedPeftConfig | GenericPeftConfig, Field(discriminator="peft_type")
]
