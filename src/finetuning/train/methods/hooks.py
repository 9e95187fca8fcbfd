"""The per-method part of the plan: what one method checks beyond the shared plan.

A method whose row in :data:`finetuning.config.methods.METHODS` names a ``plan`` module has
its own checks there, beside its recipe; :func:`finetuning.train.plan.build_plan` calls them
instead of branching on the method. Such a module defines

- ``check(loaded, resolved, rows=None) -> MethodChecks``: called once before the data is
  prepared (``rows`` None) and, when the plan prepares data, once more with the training rows.
  It raises :class:`~finetuning.errors.UserError` for what the method cannot run, and returns
  what this machine lacks for it and what the run takes from the check.
- ``lines(config, resolved, checks) -> list[str]`` (optional): its lines of the printed plan.
- ``batch_line(config, resolved) -> str`` (optional): the plan's batch line, for a method whose
  total batch is not counted in the unit of the per-device batch (GRPO: prompts, completions).

Plan modules stay light to import: `finetuning validate` loads them, and the recipe's
libraries (TRL, the model) only the run does.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from finetuning.config.methods import METHODS


@dataclass(frozen=True)
class MethodChecks:
    """What a method's plan check found.

    Attributes:
        problems: What this machine lacks for the method (a run stops on them; `validate` warns).
        rewards: GRPO: the reward functions, imported and checked.
    """

    problems: tuple[str, ...] = ()
    rewards: tuple[Any, ...] = ()


#: What a method without a plan module contributes.
NO_CHECKS = MethodChecks()


def plan_module(method: str) -> ModuleType | None:
    """The plan module of ``method``, or None when the shared plan is all it needs."""
    name = METHODS[method].plan
    return importlib.import_module(name) if name else None
