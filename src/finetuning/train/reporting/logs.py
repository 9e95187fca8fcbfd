"""Training log lines as a user reads them: numbers (not quoted strings), and no resume noise."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

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
