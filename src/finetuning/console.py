"""What a run's console shows: our lines and a progress bar, not known-harmless library noise.

The libraries we build on warn on every run about things the engine has already handled (the
embedding resize is mean-initialised on purpose, TRL's ``keep_end`` truncation is done by our own
data preparation, bitsandbytes' optional CPU kernels, ...). Those exact messages are filtered
unless the user asks for ``--logging-level DEBUG``; every other warning stays visible.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from typing import Any

#: (logger name, text in the message) of log records that are known to be harmless here.
HARMLESS_LOGS: tuple[tuple[str, str], ...] = (
    # Mean-initialising the rows of added template tokens is what we ask for (and log).
    ("transformers.modeling_utils", "mean_resizing=False"),
    # The optional CPU 4-bit kernel package; bitsandbytes falls back to its own code.
    ("bitsandbytes", "pip install kernels"),
    ("bitsandbytes.backends.cpu.ops", "pip install kernels"),
    # DeepSpeed's import-time notice on machines without a GPU.
    ("DeepSpeed", "Setting accelerator to CPU"),
)

#: (category, message regex) of Python warnings that are known to be harmless here.
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # We truncate DPO prompts ourselves (data/preference.py); TRL only sees the setting.
    (FutureWarning, r".*'keep_end'.* truncation mode is deprecated"),
    # Called by PEFT / TRL on today's transformers; nothing a user can change.
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),
)


class _DropMessages(logging.Filter):
    def __init__(self, texts: list[str]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(text in message for text in self.texts)


def install_filters(level: str) -> None:
    """Filter the known-harmless library messages, unless ``level`` is DEBUG (then show all)."""
    if level == "DEBUG":
        return
    by_logger: dict[str, list[str]] = {}
    for name, text in HARMLESS_LOGS:
        by_logger.setdefault(name, []).append(text)
    for name, texts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(texts))
    for category, pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)


_MISMATCH = re.compile(r"^(\w+): (\S+) \(from args\) != (\S+) \(from trainer_state.json\)$")


class SameStepsFilter(logging.Filter):
    """Drops "eval_steps: 0.25 (from args) != 30 (from trainer_state.json)" lines that agree.

    transformers compares the configured logging/eval/save steps with the resumed state's, but
    the state holds a fraction already turned into steps (``ceil(max_steps * fraction)``), so a
    resumed run with an unchanged config warns every time. Lines whose values mean the same are
    removed; a real difference is still reported.

    Args:
        max_steps: Returns the run's total optimizer steps (read when the warning is logged).
    """

    def __init__(self, max_steps: Callable[[], int]):
        super().__init__()
        self.max_steps = max_steps

    def _same(self, configured: str, stored: str) -> bool:
        try:
            value, steps = float(configured), float(stored)
        except ValueError:
            return False
        if value < 1:
            value = math.ceil(self.max_steps() * value)
        return value == steps

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if "(from trainer_state.json)" not in message:
            return True
        header, *lines = message.split("\n\t")
        kept = [
            line
            for line in lines
            if not ((m := _MISMATCH.match(line)) and self._same(m.group(2), m.group(3)))
        ]
        if not kept:
            return False
        record.msg = "\n\t".join([header, *kept])
        return True


def readable_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """Training log values as numbers rounded to 4 significant digits (not strings)."""
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if key == "total_flos":
            continue
        if isinstance(value, float) and math.isfinite(value):
            value = float(f"{value:.4g}")
        out[key] = value
    return out
