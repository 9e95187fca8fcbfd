"""SIGTERM and Ctrl-C outside the training loop, for the whole run.

Inside the loop :class:`~finetuning.train.safety.guards.PreemptionCallback` turns a signal into "finish
this step, save a checkpoint, exit 75"; it installs its handler when training begins and puts
this module's handler back when training ends. Outside the loop:

- before training (preprocessing, model loading): the run stops at once with exit code 75
  (:data:`~finetuning.train.safety.guards.EXIT_PREEMPTED`). Everything written before training is
  written atomically (the data cache goes to a temporary folder that is renamed when complete),
  so nothing is left half-written and the same command can simply run again;
- inside :func:`deferred` (the final save): the signal is remembered, the save finishes, and the
  run ends normally (exit 0).

The stop is raised as :class:`Interrupted`, a ``BaseException`` like ``KeyboardInterrupt``, so
that library code catching ``Exception`` cannot swallow it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from finetuning.train.safety.guards import EXIT_PREEMPTED

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A signal stopped the run outside the training loop; nothing is half-written."""

    exit_code = EXIT_PREEMPTED


class _State:
    """The handler's state in this process (one run at a time)."""

    previous: ClassVar[dict[int, Any]] = {}
    pid: int | None = None
    deferring: bool = False
    received: str | None = None


def _handle(signum: int, frame: Any) -> None:
    name = signal.Signals(signum).name
    if os.getpid() != _State.pid:  # a forked child: behave as if we were not here
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _State.deferring:
        if _State.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        _State.received = name
        logger.warning("received %s during the final save: finishing the save first", name)
        return
    raise Interrupted(
        f"stopped by {name} before training started (nothing was half-written); run the same "
        "command again to start over"
    )


def install() -> None:
    """Install the run's handler for SIGTERM and SIGINT (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread() or _State.pid == os.getpid():
        return
    _State.pid = os.getpid()
    _State.received = None
    for signum in SIGNALS:
        _State.previous[signum] = signal.signal(signum, _handle)


def restore() -> None:
    """Put back the handlers that were there before :func:`install` (the end of the run)."""
    if _State.pid != os.getpid():
        return
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _State.previous.items():
            signal.signal(signum, handler)
    _State.previous.clear()
    _State.pid = None


@contextlib.contextmanager
def deferred(what: str) -> Iterator[None]:
    """Within the block a signal is remembered, not acted on; the block finishes.

    Args:
        what: What the block does, for the log ("the final save").
    """
    if _State.pid != os.getpid():
        yield
        return
    # The preemption callback may have left its own handler in place if training raised.
    current = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    _State.deferring, _State.received = True, None
    try:
        yield
    finally:
        _State.deferring = False
        for signum, handler in current.items():
            signal.signal(signum, handler)
    if _State.received:
        logger.warning("%s finished despite %s; the run ends normally", what, _State.received)
