"""The top-level experiment configs, one per training method (``config/methods.py``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from finetuning.config.data import ChatTrainValidConfig
from finetuning.config.evaluation import EvalConfig
from finetuning.config.grpo import GRPOArguments
from finetuning.config.peft import PeftConfig
from finetuning.config.quantization import NoQuantizationConfig, QuantizationConfig
from finetuning.config.run import RunConfig
from finetuning.config.strict import StrictModel
from finetuning.config.tracking import FinetuningTrackingConfig
from finetuning.config.training import (
    BatchsizeConfig,
    DPOArguments,
    Overrides,
    PretrainArguments,
    SFTArguments,
)
from finetuning.config.training_args import check_training_args, translate_legacy
from finetuning.errors import Problem


class TrainingArgsError(ValueError):
    """Several problems in ``training_args``, kept apart so each is reported with its path."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(p.format() for p in problems))


def _training_args(value: Any, method: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of TrainingArguments fields, got {value!r}")
    translated, _, problems = translate_legacy(value, method)
    problems += check_training_args(translated, method)
    if problems:
        raise TrainingArgsError(problems)
    return translated


class _ExperimentBase(StrictModel):
    data_conf: ChatTrainValidConfig
    """The data input config."""
    training_args: dict[str, Any]
    """The fields of the method's library config (transformers' TrainingArguments for sft and
    pretrain; TRL's DPOConfig, KTOConfig, ORPOConfig, CPOConfig, GRPOConfig or RewardConfig for
    the others; the training_args section of this reference names it), with restrictions: the batch fields belong to
    batchsize_conf; fields of older releases are mapped (see the training_args section of this
    reference)."""
    batchsize_conf: BatchsizeConfig
    """Batch size configuration."""
    peft_conf: PeftConfig
    """Adapter configuration: NO_PEFT, a PEFT type such as LORA, or PRETRAINED_PEFT."""
    run_conf: RunConfig
    """Model related configuration."""
    overrides: Overrides = Overrides()
    """Override options to simplify the config interface."""
    tracking: FinetuningTrackingConfig | None = None
    """MLflow tracking configuration."""
    quant_conf: QuantizationConfig = NoQuantizationConfig()
    """Quantization configuration."""
    eval_conf: EvalConfig = EvalConfig()
    """Generation evals and lm-eval tasks (docs/evaluating.md)."""

    @classmethod
    def method_name(cls) -> str:
        """The method this config class is for (its ``method`` field's default)."""
        return cls.model_fields["method"].default

    @field_validator("training_args", mode="before")
    @classmethod
    def _check_training_args(cls, value: Any) -> dict[str, Any]:
        return _training_args(value, cls.method_name())

    @model_validator(mode="after")
    def _check_evaluation(self) -> _ExperimentBase:
        strategy = self.training_args.get("eval_strategy", "no")
        if self.data_conf.validation_data.type == "NONE" and strategy != "no":
            raise ValueError(
                f"training_args.eval_strategy is {strategy!r} but data_conf.validation_data is "
                "NONE: set eval_strategy: 'no' or give validation data"
            )
        if self.training_args.get("load_best_model_at_end") and strategy == "no":
            raise ValueError("training_args.load_best_model_at_end needs an eval_strategy")
        if (
            self.quant_conf.quantization_type != "no-quantization"
            and self.peft_conf.peft_type == "NO_PEFT"
        ):
            raise ValueError(
                "quant_conf: a quantized model can only be trained through an adapter: set "
                "peft_conf (e.g. peft_type: LORA) or quantization_type: no-quantization"
            )
        return self


class SFTExperimentConfig(_ExperimentBase):
    """The finetuning config for supervised fine-tuning (``finetuning sft``)."""

    sft_args: SFTArguments
    """SFT specific arguments."""
    method: Literal["sft"] = "sft"
    """The training method; defaults to the subcommand."""


class DPOExperimentConfig(_ExperimentBase):
    """The finetuning config for direct preference optimisation (``finetuning dpo``).

    The same as the SFT config without ``sft_args``; ``training_args`` are TRL's ``DPOConfig``
    fields (``beta``, ``loss_type``, ``max_length`` 2048, ``max_prompt_length`` 1536, ...).
    """

    sft_args: None = Field(default=None)
    """Must be absent or null for DPO."""
    dpo_args: DPOArguments = Field(default_factory=DPOArguments)
    """DPO specific arguments."""
    method: Literal["dpo"] = "dpo"
    """The training method; defaults to the subcommand."""


class _ReferenceFreeOrUnpairedBase(_ExperimentBase):
    """What KTO, ORPO and SimPO configs share: no ``sft_args``; TRL's fields in training_args.

    ``training_args.max_prompt_length`` and ``truncation_mode`` are the engine's (as for DPO):
    TRL 1.16's configs for these trainers have no prompt limit of their own.
    """

    sft_args: None = Field(default=None)
    """Must be absent or null (sft_args only applies to sft)."""

    @field_validator("training_args", mode="before")
    @classmethod
    def _check_training_args(cls, value: Any) -> dict[str, Any]:
        args = _training_args(value, cls.method_name())
        mode = args.get("truncation_mode")
        if mode not in TRUNCATION_MODES:
            raise TrainingArgsError(
                [
                    Problem(
                        f"{mode!r} is not allowed (allowed: {', '.join(TRUNCATION_MODES)})",
                        "training_args.truncation_mode",
                    )
                ]
            )
        return args


#: How a too-long prompt is cut: keep its end (the turns nearest the answer) or its start.
TRUNCATION_MODES = ("keep_end", "keep_start")


class KTOExperimentConfig(_ReferenceFreeOrUnpairedBase):
    """The finetuning config for KTO from unpaired feedback (``finetuning kto``).

    ``training_args`` are TRL's ``KTOConfig`` fields (``beta``, ``desirable_weight``,
    ``undesirable_weight``, ``loss_type``, ``max_length`` 1024, ...) plus the engine's
    ``max_prompt_length`` (512) and ``truncation_mode`` (keep_end).
    """

    method: Literal["kto"] = "kto"
    """The training method; defaults to the subcommand."""


class ORPOExperimentConfig(_ReferenceFreeOrUnpairedBase):
    """The finetuning config for ORPO (``finetuning orpo``): no reference model.

    ``training_args`` are the fields of TRL's ``ORPOConfig`` (``trl.experimental.orpo`` in TRL
    1.16: ``beta``, ``max_length`` 1024, ...) plus the engine's ``max_prompt_length`` (512) and
    ``truncation_mode`` (keep_end).
    """

    method: Literal["orpo"] = "orpo"
    """The training method; defaults to the subcommand."""


class SimPOExperimentConfig(_ReferenceFreeOrUnpairedBase):
    """The finetuning config for SimPO (``finetuning simpo``): no reference model.

    SimPO is TRL's CPO trainer (``trl.experimental.cpo`` in TRL 1.16) with ``loss_type: simpo``
    and ``cpo_alpha: 0`` (no behaviour-cloning term), the engine's defaults for this method;
    ``training_args`` are the fields of TRL's ``CPOConfig`` (``beta``, ``simpo_gamma``, ...) plus
    the engine's ``max_prompt_length`` (512) and ``truncation_mode`` (keep_end).
    """

    method: Literal["simpo"] = "simpo"
    """The training method; defaults to the subcommand."""


class GRPOExperimentConfig(_ExperimentBase):
    """The finetuning config for GRPO, online RL from reward functions (``finetuning grpo``).

    The same as the DPO config with ``grpo_args`` (the reward functions); ``training_args`` are
    TRL's ``GRPOConfig`` fields (``num_generations``, ``max_completion_length``, ``beta``,
    ``loss_type``, ``temperature``, ...). ``batchsize_conf.total_train_batch_size`` counts prompts
    per optimizer step; each prompt is sampled ``num_generations`` times.
    """

    sft_args: None = Field(default=None)
    """Must be absent or null for GRPO."""
    grpo_args: GRPOArguments
    """GRPO specific arguments: the reward functions."""
    method: Literal["grpo"] = "grpo"
    """The training method; defaults to the subcommand."""

    @field_validator("training_args", mode="before")
    @classmethod
    def _check_training_args(cls, value: Any) -> dict[str, Any]:
        args = _training_args(value, cls.method_name())
        if "reward_weights" in args:
            raise ValueError(
                "training_args.reward_weights may not be set: give each reward its weight in "
                "grpo_args.rewards[].weight"
            )
        return args


class RewardExperimentConfig(_ExperimentBase):
    """The finetuning config for reward modelling (``finetuning reward``).

    The DPO config's shape and data (``prompt_messages`` / ``chosen_messages`` /
    ``rejected_messages``); the model is the causal LM with a sequence-classification head of
    one output (the score), trained so that the chosen conversation scores above the rejected
    one. ``training_args`` are TRL's ``RewardConfig`` fields (``max_length`` 1024: a pair whose
    prompt + longer completion is longer is dropped, as TRL does; ``center_rewards_coefficient``,
    ...). With an adapter, ``peft_conf.task_type`` is ``SEQ_CLS`` (set when left out), which
    trains and saves the score head in full beside the adapter.
    """

    sft_args: None = Field(default=None)
    """Must be absent or null for reward."""
    method: Literal["reward"] = "reward"
    """The training method; defaults to the subcommand."""

    @model_validator(mode="before")
    @classmethod
    def _score_head_task(cls, data: Any) -> Any:
        peft_conf = data.get("peft_conf") if isinstance(data, dict) else None
        if isinstance(peft_conf, dict) and peft_conf.get("peft_type") not in (
            None,
            "NO_PEFT",
            "PRETRAINED_PEFT",
        ):
            data = {**data, "peft_conf": {"task_type": "SEQ_CLS", **peft_conf}}
        return data

    @model_validator(mode="after")
    def _check_task(self) -> RewardExperimentConfig:
        task = getattr(self.peft_conf, "task_type", None)
        if task is not None and task != "SEQ_CLS":
            raise ValueError(
                f"peft_conf.task_type is {task.value!r}, but a reward model is a sequence "
                "classifier: use SEQ_CLS (the default for reward), which also trains the score head"
            )
        return self


class PretrainExperimentConfig(_ExperimentBase):
    """The finetuning config for continued pretraining on raw text (``finetuning pretrain``).

    Rows are ``{"text": "..."}``: no chat template is rendered (``data_conf.chat_template_name``
    is ``keep-original``, the default here), every token is trained, a BOS opens each document
    when the tokenizer adds one by itself and an EOS closes it. ``training_args`` are
    transformers' ``TrainingArguments`` fields, as for SFT.
    """

    sft_args: PretrainArguments = Field(default_factory=PretrainArguments)
    """Length and batching arguments (the SFT names; longer documents are chunked by default)."""
    method: Literal["pretrain"] = "pretrain"
    """The training method; defaults to the subcommand."""

    @model_validator(mode="before")
    @classmethod
    def _no_template(cls, data: Any) -> Any:
        data_conf = data.get("data_conf") if isinstance(data, dict) else None
        if isinstance(data_conf, dict) and "chat_template_name" not in data_conf:
            data = {**data, "data_conf": {**data_conf, "chat_template_name": "keep-original"}}
        return data

    @model_validator(mode="after")
    def _check_template(self) -> PretrainExperimentConfig:
        name = self.data_conf.chat_template_name
        if name != "keep-original":
            raise ValueError(
                f"data_conf.chat_template_name is {name.value!r}, but pretrain renders no chat "
                "template (rows are raw text): leave it out or set keep-original"
            )
        return self


ExperimentConfig = (
    SFTExperimentConfig
    | DPOExperimentConfig
    | KTOExperimentConfig
    | ORPOExperimentConfig
    | SimPOExperimentConfig
    | GRPOExperimentConfig
    | RewardExperimentConfig
    | PretrainExperimentConfig
)

CONFIG_CLASSES: dict[str, type[_ExperimentBase]] = {
    "sft": SFTExperimentConfig,
    "dpo": DPOExperimentConfig,
    "kto": KTOExperimentConfig,
    "orpo": ORPOExperimentConfig,
    "simpo": SimPOExperimentConfig,
    "grpo": GRPOExperimentConfig,
    "reward": RewardExperimentConfig,
    "pretrain": PretrainExperimentConfig,
}
