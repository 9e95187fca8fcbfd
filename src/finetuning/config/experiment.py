"""The top-level experiment configs, one per method (SFT, DPO, GRPO, ...)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from finetuning.config.data import ChatTrainValidConfig
from finetuning.config.grpo import GRPOArguments
from finetuning.config.peft import PeftConfig
from finetuning.config.quantization import NoQuantizationConfig, QuantizationConfig
from finetuning.config.run import RunConfig
from finetuning.config.strict import StrictModel
from finetuning.config.tracking import FinetuningTrackingConfig
from finetuning.config.training import BatchsizeConfig, DPOArguments, Overrides, SFTArguments
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
    """Hugging Face TrainingArguments (SFT) or TRL DPOConfig (DPO) fields, with restrictions:
    the batch fields belong to batchsize_conf; fields of older releases are mapped (see the
    training_args section of this reference)."""
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

    @field_validator("training_args", mode="before")
    @classmethod
    def _check_training_args(cls, value: Any) -> dict[str, Any]:
        return _training_args(value, "sft")


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

    @field_validator("training_args", mode="before")
    @classmethod
    def _check_training_args(cls, value: Any) -> dict[str, Any]:
        return _training_args(value, "dpo")


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
        args = _training_args(value, "grpo")
        if "reward_weights" in args:
            raise ValueError(
                "training_args.reward_weights may not be set: give each reward its weight in "
                "grpo_args.rewards[].weight"
            )
        return args


ExperimentConfig = SFTExperimentConfig | DPOExperimentConfig | GRPOExperimentConfig

CONFIG_CLASSES: dict[str, type[_ExperimentBase]] = {
    "sft": SFTExperimentConfig,
    "dpo": DPOExperimentConfig,
    "grpo": GRPOExperimentConfig,
}
