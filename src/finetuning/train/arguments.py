"""Steps both recipes share: world size, determinism, output paths, trainer arguments, summary."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from finetuning.config.experiment import ExperimentConfig
from finetuning.config.training_args import ENGINE_FIELDS, training_arg_default
from finetuning.errors import UserError
from finetuning.train.batch import Resolved

logger = logging.getLogger(__name__)


def world_size() -> int:
    """Number of processes of this run (from the launcher's environment)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_kind(config: ExperimentConfig) -> str | None:
    """None for one process, else "deepspeed", "fsdp" or "ddp"."""
    if (
        config.training_args.get("deepspeed")
        or os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"
    ):
        return "deepspeed"
    if config.training_args.get("fsdp") or os.environ.get("ACCELERATE_USE_FSDP") == "true":
        return "fsdp"
    return "ddp" if world_size() > 1 else None


def output_dirs(config: ExperimentConfig) -> tuple[Path, Path]:
    """(output_dir, logging_dir), defaulting to $CHECKPOINTS_PATH / $LOGS_PATH, else ./checkpoints, ./logs.

    Raises:
        UserError: The logging dir exists as a file.
    """
    args = config.training_args
    output = args.get("output_dir") or os.environ.get("CHECKPOINTS_PATH") or "./checkpoints"
    logs = args.get("logging_dir") or os.environ.get("LOGS_PATH") or "./logs"
    if Path(logs).exists() and not Path(logs).is_dir():  # TensorBoard would fail mid-run
        raise UserError(
            f"training_args.logging_dir: cannot write into {logs!r}: it is a file, not a folder "
            "(set logging_dir or $LOGS_PATH to a folder)"
        )
    return Path(output), Path(logs)


def set_determinism(config: ExperimentConfig) -> None:
    """Seed everything; 'half' adds deterministic algorithms, 'full' HF full determinism."""
    from transformers import enable_full_determinism, set_seed

    seed = int(config.training_args.get("seed", training_arg_default(config.method, "seed")))
    level = config.run_conf.determinism
    if level == "full":
        enable_full_determinism(seed)
    else:
        set_seed(seed, deterministic=level == "half")


def report_to(config: ExperimentConfig, tracking_enabled: bool) -> list[str]:
    """``report_to`` with "mlflow" added when tracking is on and removed when it is off."""
    value = config.training_args.get("report_to", "none")
    targets = [value] if isinstance(value, str) else list(value or [])
    targets = [t for t in targets if t not in ("none", "mlflow", "all")]
    if tracking_enabled:
        targets.append("mlflow")
    return targets or ["none"]


def trainer_kwargs(
    config: ExperimentConfig,
    resolved: Resolved,
    output_dir: Path,
    tracking_enabled: bool,
) -> dict[str, Any]:
    """The keyword arguments for ``TrainingArguments`` / ``DPOConfig``."""
    kwargs = {
        k: v for k, v in config.training_args.items() if k not in ENGINE_FIELDS[config.method]
    }
    kwargs.update(
        output_dir=str(output_dir),
        per_device_train_batch_size=resolved.per_device_train,
        per_device_eval_batch_size=resolved.per_device_eval,
        gradient_accumulation_steps=resolved.accumulation,
        learning_rate=resolved.learning_rate,
        report_to=report_to(config, tracking_enabled),
        remove_unused_columns=False,
    )
    if not has_accelerator():
        # Without use_cpu, transformers treats a multi-process CPU run as N separate runs.
        kwargs.setdefault("use_cpu", True)
    kwargs.setdefault("include_num_input_tokens_seen", "non_padding")
    kwargs.setdefault("seed", training_arg_default(config.method, "seed"))
    if kwargs.get("include_num_input_tokens_seen") in (False, "no"):
        kwargs["include_num_input_tokens_seen"] = "non_padding"
    if resolved.world_size > 1 and "ddp_find_unused_parameters" not in kwargs:
        kwargs["ddp_find_unused_parameters"] = False
    ds = kwargs.get("deepspeed")
    if isinstance(ds, str):
        try:
            ds = json.loads(Path(ds).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(
                f"training_args.deepspeed: cannot read the DeepSpeed JSON {ds!r}: {exc}"
            ) from None
    if isinstance(ds, dict):
        kwargs["deepspeed"] = {
            **ds,
            "train_micro_batch_size_per_gpu": resolved.per_device_train,
            "gradient_accumulation_steps": resolved.accumulation,
            "train_batch_size": config.batchsize_conf.total_train_batch_size,
        }
    return kwargs


def has_accelerator() -> bool:
    """Whether a GPU (CUDA or Apple MPS) is there; without one, runs use the CPU (gloo)."""
    import torch

    return torch.cuda.is_available() or torch.backends.mps.is_available()


def build_training_arguments(cls: type, kwargs: dict[str, Any]) -> Any:
    """Instantiate ``cls`` (TrainingArguments or DPOConfig), turning its value errors into user errors."""
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise UserError(f"training_args: {exc}") from None


def log_resolved(config: ExperimentConfig, resolved: Resolved, notes: list[str]) -> None:
    """Log the config's notes and the resolved batch sizes and learning rate, once."""
    for note in notes:
        logger.info(note)
    bs = config.batchsize_conf
    logger.info(
        "batch: total %d = %d processes x %d per device x %d accumulation; eval %d per device",
        bs.total_train_batch_size,
        resolved.world_size,
        resolved.per_device_train,
        resolved.accumulation,
        resolved.per_device_eval,
    )
    logger.info(
        "learning rate: %.3g (x%s, %s batch-size scaling)",
        resolved.learning_rate,
        config.overrides.lr_multiplier,
        config.overrides.lr_batch_size_scaling,
    )
