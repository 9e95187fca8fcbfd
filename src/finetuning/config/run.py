"""Run configuration: the model to fine-tune, how to load it, resume and determinism."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from finetuning.config.paths import FolderName
from finetuning.config.strict import StrictModel

#: Values of ``torch_dtype`` / ``dtype`` that ``from_pretrained`` loads weights in.
DTYPES = ("auto", "bfloat16", "float16", "float32", "float64", "half", "float", "double")


class ModelArguments(StrictModel):
    """Arguments passed to ``AutoModelForCausalLM.from_pretrained``.

    Only the keys you set are forwarded; keys not listed here are passed through unchanged.
    ``torch_dtype`` is accepted as the older spelling of ``dtype``. Quantization is configured in
    ``quant_conf``, not here. When ``device_map`` is not set, the engine chooses it per process
    (the whole model on the local device for multi-process DDP, unset under DeepSpeed/FSDP).
    """

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    torch_dtype: str = "auto"
    """Weights dtype: "auto" (as saved), "bfloat16", "float16" or "float32" (also "float64",
    "half", "float", "double"); the same for ``dtype``."""
    device_map: dict[str, Any] | str | int | None = "auto"
    """Where each submodule goes: "auto", "balanced_low_0", "sequential", a device or a dict."""
    max_memory: dict[str, Any] | None = None
    """Maximum memory per device for the device map."""
    low_cpu_mem_usage: bool = False
    """Load with less CPU memory."""
    attn_implementation: str | None = None
    """Attention implementation: "sdpa", "flash_attention_2" or "eager"."""
    offload_folder: str | None = None
    """Folder to offload weights to."""
    offload_state_dict: bool | None = None
    """Default is True if offloading (otherwise no effect)."""
    offload_buffers: bool | None = None
    """Offload buffers along with the weights."""
    use_cache: bool = True
    """Keep the KV cache (generation only; training always runs without it)."""
    cache_dir: str | None = None
    """Hugging Face cache folder."""
    force_download: bool = False
    """Force downloading even if cached."""
    local_files_only: bool = False
    """Only use local files."""
    proxies: dict[str, Any] | None = None
    """Proxies for downloads."""
    resume_download: bool = False
    """Resume incomplete downloads (kept for compatibility)."""
    revision: str = "main"
    """Model revision."""
    code_revision: str = "main"
    """Revision of remote code."""
    subfolder: str | None = None
    """Subfolder inside the model repository."""
    token: str | None = None
    """Hub token."""
    use_safetensors: bool | None = None
    """Load from safetensors; a pickle-only checkpoint needs this set to false explicitly."""
    variant: str | None = None
    """Weights variant."""
    trust_remote_code: bool = False
    """Warning: if set to True, allows execution of downloaded remote code."""

    @model_validator(mode="after")
    def _check_dtype(self) -> ModelArguments:
        # Checked here because from_pretrained only fails after reading the model's config.
        for key in ("torch_dtype", "dtype"):
            value = getattr(self, key, None)
            if value is not None and value not in DTYPES:
                raise ValueError(
                    f"{key}: {value!r} is not a dtype a model can be loaded in (allowed: "
                    f"{', '.join(DTYPES)})"
                )
        return self


class RunConfig(StrictModel):
    """Experiment running configuration."""

    model: str = "/local_resources/basemodel"
    """Local path (or Hub id) of the model to fine-tune."""
    model_args: ModelArguments = ModelArguments()
    """Arguments for loading the model."""
    tokenizer: str | None = None
    """Tokenizer path or Hub id; None uses the model's own."""
    use_fast_tokenizer: bool = True
    """Use the fast (Rust) tokenizer."""
    processor_args: dict[str, Any] = Field(default_factory=dict)
    """Vision-language models: arguments for ``AutoProcessor.from_pretrained``, e.g. the image
    processor's size settings (``{size: {height: 448, width: 448}}``, or ``min_pixels`` /
    ``max_pixels`` for families that resize by pixel count). See docs/vision.md."""
    train_vision_tower: bool = False
    """Vision-language models: also train the vision tower and its projector (frozen by
    default; with an adapter, LoRA then targets their linear layers too)."""
    resume_from_checkpoint: bool | str = False
    """false: start fresh; true: the latest checkpoint (error if none); "auto": the latest
    checkpoint-N in output_dir if any, else fresh; any other string: that checkpoint path."""
    final_checkpoint_name: FolderName = "checkpoint-final"
    """Name of the final checkpoint folder inside output_dir (a plain folder name)."""
    determinism: Literal["no", "half", "full"] = "no"
    """'no': seed only; 'half': prefer deterministic algorithms; 'full': only deterministic
    implementations (also cuBLAS workspace and cuDNN settings). Slower; for debugging."""
