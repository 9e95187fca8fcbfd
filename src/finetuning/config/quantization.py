"""Quantization configuration (bitsandbytes) for QLoRA-style training."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from finetuning.config.strict import StrictModel


class NoQuantizationConfig(StrictModel):
    """A marker not to use quantization."""

    quantization_type: Literal["no-quantization"] = "no-quantization"


class BnBQuantizationConfig(StrictModel):
    """bitsandbytes quantization; the fields are those of transformers' ``BitsAndBytesConfig``.

    Needs the ``quant`` extra (``pip install 'finetuning[quant]'``) and an adapter in ``peft_conf``.
    """

    quantization_type: Literal["bits-and-bytes"] = "bits-and-bytes"
    load_in_8bit: bool = False
    """Load the linear layers in 8 bit (LLM.int8)."""
    load_in_4bit: bool = False
    """Load the linear layers in 4 bit (fp4 or nf4)."""
    llm_int8_threshold: float = 6.0
    """Outlier threshold of LLM.int8."""
    llm_int8_skip_modules: list[str] | None = None
    """Modules to keep unquantized."""
    llm_int8_enable_fp32_cpu_offload: bool = False
    """Keep offloaded parts in fp32 on the CPU."""
    llm_int8_has_fp16_weight: bool = False
    """Keep fp16 main weights for LLM.int8."""
    bnb_4bit_compute_dtype: str | None = None
    """Compute dtype of 4-bit layers, e.g. "bfloat16"; default float32."""
    bnb_4bit_quant_type: Literal["fp4", "nf4"] = "fp4"
    """4-bit data type."""
    bnb_4bit_use_double_quant: bool = False
    """Also quantize the quantization constants."""
    bnb_4bit_quant_storage: str | None = None
    """Storage dtype of the packed 4-bit weights, e.g. "uint8" or "bfloat16"."""

    @model_validator(mode="after")
    def _one_mode(self) -> BnBQuantizationConfig:
        if self.load_in_8bit and self.load_in_4bit:
            raise ValueError("set only one of load_in_8bit and load_in_4bit")
        if not (self.load_in_8bit or self.load_in_4bit):
            raise ValueError("bits-and-bytes needs load_in_4bit: true or load_in_8bit: true")
        return self


QuantizationConfig = Annotated[
    NoQuantizationConfig | BnBQuantizationConfig, Field(discriminator="quantization_type")
]
