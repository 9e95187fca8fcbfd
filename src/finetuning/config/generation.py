"""The generate config of the established engine (``generate CONFIG OUTPUT.yaml``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from finetuning.config.data import DatasetDefinition
from finetuning.config.quantization import NoQuantizationConfig, QuantizationConfig
from finetuning.config.run import ModelArguments
from finetuning.config.strict import StrictModel


class InferenceModelConfig(StrictModel):
    """The model (and optional adapter) to generate with."""

    model: str
    """Model path or Hub id."""
    model_args: ModelArguments = ModelArguments()
    """Arguments for loading the model."""
    adapter: str | None = None
    """Adapter path or Hub id, or None for no adapter."""
    tokenizer: str | None = None
    """Tokenizer path; None uses the adapter's (if any), else the model's."""


class OpenPromptConfig(StrictModel):
    """Generate from a fixed text prompt, ``num_samples`` times."""

    type: Literal["open-input"]
    input: str = ""
    """The text to start from (the tokenizer may add BOS)."""
    num_samples: int = Field(default=1, ge=1)
    """How many samples to generate."""


class EvalDataPromptConfig(StrictModel):
    """Generate an answer for the ``prompt_messages`` of every row of a preference/eval file."""

    type: Literal["eval-data"]
    data: DatasetDefinition
    """A JSONL file whose rows have ``prompt_messages`` (or ``messages``)."""


class GenerationConfig(StrictModel):
    """A config for generating with a trained checkpoint through Hugging Face ``generate``."""

    model_conf: InferenceModelConfig
    """The model to generate with."""
    prompt_conf: Annotated[OpenPromptConfig | EvalDataPromptConfig, Field(discriminator="type")]
    """Where the prompts come from."""
    hf_gen_params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of transformers' ``GenerationConfig`` (max_new_tokens, do_sample, ...)."""
    quant_conf: QuantizationConfig = NoQuantizationConfig()
    """Quantization for loading the model."""
