"""User errors: problems the user can fix in their config, data or command line.

A :class:`UserError` carries one or more :class:`Problem` entries. The CLI prints them without a
traceback and exits with code 2; anything else that escapes is a bug (exit code 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing that is wrong, located as precisely as we can.

    Attributes:
        message: What is wrong and what is allowed.
        where: A config path (``training_args.learning_rate``) or ``file:line``; may be empty.
        hint: An optional suggestion ("did you mean ...").
    """

    message: str
    where: str = ""
    hint: str = ""

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class UserError(Exception):
    """An error caused by the user's input, reported as a list of problems.

    Args:
        problems: A message, a :class:`Problem`, or several of them.
        header: An optional first line, e.g. ``"config.yaml is not valid:"``.
    """

    def __init__(self, problems: str | Problem | Iterable[Problem], header: str = ""):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        self.header = header
        super().__init__(self.format())

    def format(self) -> str:
        lines = [p.format() for p in self.problems]
        if self.header:
            return "\n".join([self.header, *(f"  - {line}" for line in lines)])
        return "\n".join(lines)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A "did you mean `x`?" hint for a misspelt name, or an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else ""


class RunStopped(Exception):
    """A training run that stopped on purpose (preempted, diverged); carries its exit code."""

    exit_code = 1
