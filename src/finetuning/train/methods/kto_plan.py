"""What a KTO run needs from the batch settings, checked by the plan before the model loads."""

from __future__ import annotations

from typing import Any

from finetuning.config.experiment import ExperimentConfig
from finetuning.config.training_args import training_arg_default
from finetuning.errors import UserError
from finetuning.train.batch import Resolved
from finetuning.train.methods.hooks import MethodChecks

#: The loss that estimates no KL term, so needs neither micro-batches of two nor fixed order.
NO_KL_LOSS = "apo_zero_unpaired"


def check(loaded: Any, resolved: Resolved, rows: Any = None) -> MethodChecks:
    """KTO's plan check (:mod:`finetuning.train.methods.hooks`): the batch settings."""
    check_batch(loaded.config, resolved)
    return MethodChecks()


def check_batch(config: ExperimentConfig, resolved: Resolved) -> None:
    """Refuse KTO batch settings TRL's KTOTrainer would refuse after loading the model.

    TRL estimates the KL term of each example from the completion of its neighbour in the same
    micro-batch (``KTOTrainer.__init__`` in TRL 1.16 raises for a per-device batch of 1 and for a
    sampling order other than ``sequential``).

    Raises:
        UserError: A per-device batch of 1, or ``train_sampling_strategy`` other than sequential,
            with a loss that estimates the KL term.
    """
    args = config.training_args
    loss = args.get("loss_type", training_arg_default("kto", "loss_type"))
    if loss == NO_KL_LOSS:
        return
    if resolved.per_device_train < 2:
        raise UserError(
            f"batchsize_conf: kto (loss_type {loss}) estimates its KL term from the other examples "
            f"of a micro-batch, so it needs at least 2 examples per device, but the batch resolves "
            f"to {resolved.per_device_train} per device ({resolved.world_size} processes x "
            f"{resolved.per_device_train} x {resolved.accumulation} accumulation): raise "
            "max_per_device_train_batch_size (and total_train_batch_size), or use loss_type: "
            f"{NO_KL_LOSS}"
        )
    strategy = args.get(
        "train_sampling_strategy", training_arg_default("kto", "train_sampling_strategy")
    )
    if strategy != "sequential":
        raise UserError(
            f"training_args.train_sampling_strategy: {strategy!r}, but kto (loss_type {loss}) pairs "
            "each example with its neighbour in a fixed-order micro-batch: use 'sequential' (the "
            "engine shuffles the examples once, with training_args.seed, before training)"
        )
