"""Adapter configuration: full fine-tuning, a new PEFT adapter, or a pretrained one."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

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


class PretrainedPeftConfig(StrictModel):
    """Continue training a pretrained adapter (its config and weights)."""

    peft_type: Literal["PRETRAINED_PEFT"]
    name_or_path: str
    """HF ID or path to the pretrained peft."""


PeftConfig = Annotated[
    NoPeftConfig | PretrainedPeftConfig | GenericPeftConfig, Field(discriminator="peft_type")
]
