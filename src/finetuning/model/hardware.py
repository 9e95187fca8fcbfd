"""What the config asks of the hardware that this machine may not have."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from finetuning.config.experiment import ExperimentConfig

logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def hardware_problems(config: ExperimentConfig) -> list[str]:
    """Problems with running ``config`` on this machine (imports torch).

    ``bf16`` on a CPU without native bfloat16 is only logged as a warning: it runs, slower.

    Returns:
        One message per requirement this machine does not meet, naming the config key.
    """
    import torch

    problems = []
    has_cuda = torch.cuda.is_available()
    attn = config.run_conf.model_args.attn_implementation
    if attn == "flash_attention_2":
        if not has_cuda:
            problems.append(
                "run_conf.model_args.attn_implementation: flash_attention_2 needs a CUDA GPU and "
                "none is available here (use 'sdpa')"
            )
        elif importlib.util.find_spec("flash_attn") is None:
            problems.append(
                "run_conf.model_args.attn_implementation: flash_attention_2 needs the flash-attn "
                "package (pip install flash-attn) or use 'sdpa'"
            )
    if config.training_args.get("bf16"):
        if has_cuda and not torch.cuda.is_bf16_supported():
            problems.append("training_args.bf16: this GPU does not support bfloat16 (use fp16)")
        if not has_cuda and not cpu_has_bf16():
            # A warning, not a problem: transformers accepts it and torch emulates bf16, only
            # slower; the established engine's own CPU tests train with it.
            logger.warning(
                "training_args.bf16: this CPU has no bfloat16 support (AVX512-BF16/AMX); bf16 "
                "is emulated and runs several times slower than fp32 here: set bf16: false "
                "unless you mean to test bf16"
            )
    if config.training_args.get("use_liger_kernel"):
        if not has_cuda:
            problems.append(
                "training_args.use_liger_kernel: Liger's Triton kernels need a GPU: remove it on "
                "CPU (the engine's chunked fp32 loss is used instead)"
            )
        elif importlib.util.find_spec("liger_kernel") is None:
            problems.append(
                "training_args.use_liger_kernel: needs the liger-kernel package "
                "(pip install liger-kernel)"
            )
    if config.training_args.get("fp16") and not has_cuda:
        problems.append("training_args.fp16: fp16 mixed precision needs a GPU: set fp16: false")
    return problems
