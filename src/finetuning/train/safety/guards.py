"""Guards around the training loop: preemption (SIGTERM/SIGINT) and non-finite training.

On SIGTERM or SIGINT the run finishes the optimizer step it is in, writes a complete resumable
checkpoint (every process agrees on the step), and exits with :data:`EXIT_PREEMPTED`; the same
command with ``resume_from_checkpoint: auto`` continues from it. A second SIGINT stops at once.

A non-finite gradient (which a NaN/inf loss also produces) stops the run before the optimizer
step can corrupt the weights, naming the step; the checkpoints written so far stay as they are.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from typing import Any

from transformers import TrainerCallback

from finetuning.errors import RunStopped

logger = logging.getLogger(__name__)

#: Exit code of a run stopped by SIGTERM/SIGINT after saving its checkpoint (EX_TEMPFAIL: retry).
EXIT_PREEMPTED = 75
#: Exit code of a run stopped because its loss or gradients became non-finite.
EXIT_DIVERGED = 3


class Preempted(RunStopped):
    """The run stopped on a signal after writing a resumable checkpoint."""

    exit_code = EXIT_PREEMPTED


class TrainingDiverged(RunStopped):
    """The loss or the gradients became non-finite."""

    exit_code = EXIT_DIVERGED


def _agree(flag: bool) -> bool:
    """True on every process when it is true on any (a no-op on one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    backend = dist.get_backend()
    device = "cuda" if backend == "nccl" and torch.cuda.is_available() else "cpu"
    tensor = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


class PreemptionCallback(TrainerCallback):
    """Turns SIGTERM/SIGINT into "finish this step, save, stop"."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = name
        logger.warning("received %s: finishing the current step, then saving a checkpoint", name)

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if _agree(self.signal_name is not None):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class FiniteCheckCallback(TrainerCallback):
    """Stops the run when the gradients are not finite, before the optimizer applies them."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if not torch.isfinite(norm):
            raise TrainingDiverged(
                f"the gradients became non-finite at step {state.global_step + 1} (norm {norm.item()}): "
                "the optimizer step was not applied; the checkpoints saved so far are intact. Lower "
                "the learning rate, set max_grad_norm, or check the data and dtype (fp16 overflows)"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            raise TrainingDiverged(f"the training loss became {loss} at step {state.global_step}")
