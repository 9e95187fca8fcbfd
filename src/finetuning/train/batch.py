"""Batch-size and learning-rate resolution, computed once when a run starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from finetuning.config.experiment import ExperimentConfig
from finetuning.config.training_args import training_arg_default
from finetuning.errors import UserError


@dataclass(frozen=True)
class Resolved:
    """What the run derives from the config and the world size.

    Attributes:
        world_size: Number of processes.
        per_device_train: Per-device micro-batch size.
        accumulation: Gradient accumulation steps.
        per_device_eval: Per-device eval batch size.
        learning_rate: The learning rate after ``overrides``.
    """

    world_size: int
    per_device_train: int
    accumulation: int
    per_device_eval: int
    learning_rate: float


def resolve_batch(total: int, max_per_device: int, world_size: int) -> tuple[int, int]:
    """(per-device batch, accumulation) for a total batch over ``world_size`` processes.

    Accumulation is the smallest ``a >= 1`` with ``total`` divisible by ``world_size * a`` and
    ``total / (world_size * a) <= max_per_device``.

    Raises:
        UserError: ``total`` is not divisible by ``world_size``, or ``max_per_device < 1``.
    """
    if max_per_device < 1:
        raise UserError(
            f"batchsize_conf.max_per_device_train_batch_size must be >= 1, got {max_per_device}"
        )
    if total % world_size:
        raise UserError(
            f"batchsize_conf.total_train_batch_size {total} is not divisible by the "
            f"{world_size} processes: use a multiple of {world_size}"
        )
    per_process = total // world_size
    # The largest divisor of per_process that fits one device, found among the divisor pairs
    # (i, per_process / i) with i <= sqrt: O(sqrt(total)) steps, where counting accumulation up
    # from 1 took O(total) and hung on a total of 10**10.
    per_device, i = 1, 1
    while i * i <= per_process:
        if per_process % i == 0:
            for divisor in (i, per_process // i):
                if per_device < divisor <= max_per_device:
                    per_device = divisor
        i += 1
    return per_device, per_process // per_device


def scaled_learning_rate(base: float, multiplier: float, scaling: str, total: int) -> float:
    """``base x multiplier x {1, sqrt(total), total}`` for scaling none / sqrt / linear."""
    factor = {"none": 1.0, "sqrt": math.sqrt(total), "linear": float(total)}[scaling]
    return base * multiplier * factor


def base_learning_rate(config: ExperimentConfig) -> float:
    """``training_args.learning_rate``, else the library's default for the method."""
    value = config.training_args.get("learning_rate")
    if value is None:
        value = training_arg_default(config.method, "learning_rate")
    return float(value)


def sequences_per_prompt(config: ExperimentConfig) -> int:
    """How many trained sequences one row gives: GRPO's ``num_generations``, else 1."""
    if config.method != "grpo":
        return 1
    value = config.training_args.get("num_generations")
    return int(value if value is not None else training_arg_default("grpo", "num_generations"))


def resolve(config: ExperimentConfig, world_size: int) -> Resolved:
    """Resolve batch sizes and the learning rate of ``config`` for ``world_size`` processes.

    GRPO's ``total_train_batch_size`` counts prompts; the per-device batch and the accumulation
    are of completions: ``total x num_generations`` sequences per optimizer step.
    """
    bs = config.batchsize_conf
    per_prompt = sequences_per_prompt(config)
    if per_prompt > 1 and (bs.total_train_batch_size * per_prompt) % world_size:
        raise UserError(
            f"batchsize_conf.total_train_batch_size {bs.total_train_batch_size} prompts x "
            f"training_args.num_generations {per_prompt} = {bs.total_train_batch_size * per_prompt}"
            f" completions per step is not divisible by the {world_size} processes: make "
            f"total_train_batch_size x num_generations a multiple of {world_size}"
        )
    per_device, accumulation = resolve_batch(
        bs.total_train_batch_size * per_prompt,
        bs.max_per_device_train_batch_size,
        world_size,
    )
    lr = scaled_learning_rate(
        base_learning_rate(config),
        config.overrides.lr_multiplier,
        config.overrides.lr_batch_size_scaling,
        bs.total_train_batch_size,
    )
    return Resolved(
        world_size=world_size,
        per_device_train=per_device,
        accumulation=accumulation,
        per_device_eval=bs.per_device_eval_batch_size or per_device,
        learning_rate=lr,
    )
