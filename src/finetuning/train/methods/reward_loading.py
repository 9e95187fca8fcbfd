"""Resolving ``grpo_args.rewards`` into callables for TRL, checked before the model loads.

A reward's ``function`` is a built-in (``finetuning.train.methods.rewards``), ``package.module:function``
or ``path/to/file.py:function`` (relative to the config file). Each is imported once, when the
plan is built; a missing module, file or function, a signature that cannot take what the run
passes, a ``kwargs`` key the function does not accept, or a row column the function needs that
a row lacks, is a :class:`UserError` naming the config path, before any model is loaded.

What a reward function is called with (by keyword; it declares the ones it wants, or takes
``**kwargs`` for all of them): ``completions`` (decoded strings), ``prompts`` (the rendered
prompt strings), ``completion_ids`` (token ids), ``trainer_state``, every other key of the row
(``answer``, ...; one value per completion), and its ``kwargs`` from the config. It returns one
float (or None: not applicable) per completion. One that raises stops the run with a user error
naming the function, the row (``file:line``) and the completion it failed on.

None is TRL's "not applicable" (TRL 1.16, ``GRPOTrainer._generate_and_score_completions``): a
completion's total reward is the weighted sum of the rewards that scored it, a completion no
reward scored gets advantage 0 (it does not move the policy) and is left out of its group's
mean, and a function's logged mean is over the completions it scored (NaN when it scored none).
:class:`RewardCall` counts the Nones of each function; the run logs the counts at the end.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuning.config.grpo import BUILTIN_REWARDS, RewardSpec
from finetuning.data.prompts import RESERVED_KEYS
from finetuning.errors import Problem, UserError
from finetuning.train.methods.reward_imports import resolve_function
from finetuning.train.methods.rewards import BUILTINS

#: What the trainer passes to every reward function besides the row's keys.
TRAINER_ARGS = ("prompts", "completions", "completion_ids", "trainer_state")
#: Parameter names no call ever fills: TRL keeps a row's own key of that name for itself.
NEVER_PASSED = tuple(k for k in RESERVED_KEYS if k not in TRAINER_ARGS)
#: What TRL passes that we do not hand on (its table and metric hooks).
_TRL_ONLY = ("log_extra", "log_metric", "environments")


@dataclass(frozen=True)
class Reward:
    """A resolved reward function.

    Attributes:
        name: What its metrics are logged under (``rewards/NAME/mean``).
        function: The callable.
        weight: Its weight in the total reward.
        kwargs: Bound from the config.
        params: The keyword parameters it declares.
        takes_all: Whether it has ``**kwargs`` (then it gets every row key).
        where: Its config path (``grpo_args.rewards[0]``).
        source: ``function`` as written in the config.
    """

    name: str
    function: Callable[..., Any]
    weight: float
    kwargs: dict[str, Any] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    takes_all: bool = False
    where: str = ""
    source: str = ""


class RewardFailed(UserError):
    """A reward function raised or returned something unusable while training."""


def _check_builtin(spec: RewardSpec, where: str) -> None:
    """Values of a built-in's kwargs that could only fail mid-run."""
    kwargs = spec.kwargs
    if spec.function == "regex_format":
        try:
            re.compile(str(kwargs.get("pattern", "")))
        except re.error as exc:
            raise UserError(
                Problem(f"not a valid regular expression: {exc}", f"{where}.kwargs.pattern")
            ) from None
    if spec.function == "length":
        target = kwargs.get("target")
        if isinstance(target, bool) or not isinstance(target, int | float) or target <= 0:
            raise UserError(
                Problem(f"must be a positive number, got {target!r}", f"{where}.kwargs.target")
            )
        if kwargs.get("unit", "tokens") not in ("tokens", "chars"):
            raise UserError(
                Problem(f"must be tokens or chars, got {kwargs['unit']!r}", f"{where}.kwargs.unit")
            )


def _signature(function: Callable[..., Any], spec: RewardSpec, where: str) -> tuple[tuple, bool]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise UserError(
            Problem(f"cannot read the signature of {spec.function}: {exc}", where)
        ) from None
    params, takes_all, problems = [], False, []
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            takes_all = True
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            problems.append(f"parameter {p.name!r} is positional-only; rewards are called by name")
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params.append(p.name)
    if "completions" not in params and not takes_all:
        problems.append("it must accept `completions` (or **kwargs)")
    for name in params:
        if name in NEVER_PASSED and name not in spec.kwargs:
            problems.append(
                f"parameter {name!r} is never passed: TRL keeps a row's {name!r} key for itself; "
                f"take `{name}s` (the rendered {name} strings), or rename the data key"
            )
    for key in spec.kwargs:
        if key in TRAINER_ARGS:
            problems.append(f"kwargs.{key} is passed by the trainer; it cannot be set in kwargs")
        elif key not in params and not takes_all:
            problems.append(
                f"kwargs.{key} is not a parameter of {spec.function} (it takes "
                f"{', '.join(params) or 'nothing'})"
            )
    if problems:
        raise UserError(
            [Problem(p, where) for p in problems],
            header=f"{where}: {spec.function} cannot be used as a reward function:",
        )
    return tuple(params), takes_all


def _required(function: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def resolve_rewards(
    specs: Sequence[RewardSpec],
    base: Path,
    rows: Sequence[dict[str, Any]] | None = (),
    where: str = "grpo_args.rewards",
) -> tuple[Reward, ...]:
    """Import and check every reward of ``grpo_args.rewards``.

    Args:
        specs: ``grpo_args.rewards``.
        base: The folder relative file paths are read from (the config file's).
        rows: The training rows; a parameter a function requires must be in every row (or be
            passed by the trainer, or set in its ``kwargs``). Empty or None: not checked.
        where: The config path of ``specs`` (``eval_conf.generation[0].metrics`` for an eval's
            metrics, which are specified and checked like rewards).

    Raises:
        UserError: Naming ``grpo_args.rewards[i]`` and what is wrong.
    """
    found: list[Reward] = []
    names: dict[str, int] = {}
    prefix = where
    for i, spec in enumerate(specs):
        where = f"{prefix}[{i}]"
        function = resolve_function(spec.function, base, f"{where}.function")
        if spec.function in BUILTIN_REWARDS:
            _check_builtin(spec, where)
        params, takes_all = _signature(function, spec, where)
        for name in _required(function):
            if name in TRAINER_ARGS or name in spec.kwargs:
                continue
            lacking = next((r for r in rows or () if name not in r), None)
            if lacking is not None:
                raise UserError(
                    Problem(
                        f"{spec.function} needs {name!r}: give it in kwargs or as a key of every "
                        f"data row ({lacking.get('_where', 'a row')} has no {name!r})",
                        where,
                    )
                )
        base_name = spec.name or (
            spec.function if spec.function in BUILTINS else getattr(function, "__name__", "reward")
        )
        names[base_name] = names.get(base_name, 0) + 1
        name = base_name if names[base_name] == 1 else f"{base_name}_{names[base_name]}"
        found.append(
            Reward(
                name,
                function,
                spec.weight,
                dict(spec.kwargs),
                params,
                takes_all,
                where,
                spec.function,
            )
        )
    return tuple(found)


def _shorten(text: Any, limit: int = 200) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RewardCall:
    """A :class:`Reward` as the callable TRL's ``GRPOTrainer`` calls (``reward_funcs``).

    It passes each function the arguments it declares, checks what comes back, and turns an
    exception into a :class:`RewardFailed` naming the function, the row and the completion.
    """

    def __init__(self, reward: Reward):
        self.reward = reward
        self.__name__ = reward.name  # TRL logs rewards/<__name__>/mean
        self.completions = 0  # scored by this function so far
        self.nones = 0  # of them, returned None (not applicable)

    def none_note(self) -> str | None:
        """How often the function returned None, for the run's log (None: it never did)."""
        if not self.nones:
            return None
        return (
            f"reward {self.reward.name} ({self.reward.source}) returned None (not applicable) "
            f"for {self.nones} of {self.completions} completions: those count 0 in the total "
            "reward; a completion no reward scored has advantage 0 and does not train"
        )

    def _arguments(self, available: dict[str, Any]) -> dict[str, Any]:
        reward = self.reward
        if reward.takes_all:
            args = dict(available)
        else:
            args = {k: v for k, v in available.items() if k in reward.params}
        args.update(reward.kwargs)
        return args

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[Any]:
        where = kwargs.get("_where") or [""] * len(completions)
        available = {
            k: v for k, v in kwargs.items() if not k.startswith("_") and k not in _TRL_ONLY
        }
        available.update(prompts=prompts, completions=completions)
        try:
            result = self.reward.function(**self._arguments(available))
        except Exception as exc:
            raise self._failure(available, where, exc) from None
        return self._checked(result, completions, where)

    def _checked(self, result: Any, completions: list[Any], where: list[str]) -> list[Any]:
        reward = self.reward
        if inspect.isawaitable(result):
            if asyncio.iscoroutine(result):
                result.close()
            raise RewardFailed(Problem(f"{reward.source} returned an awaitable", reward.where))
        try:
            values = list(result)
        except TypeError:
            raise RewardFailed(
                Problem(
                    f"{reward.source} returned {type(result).__name__}, not a list of floats "
                    f"(one per completion)",
                    reward.where,
                )
            ) from None
        if len(values) != len(completions):
            raise RewardFailed(
                Problem(
                    f"{reward.source} returned {len(values)} rewards for {len(completions)} "
                    "completions: return one float (or None) per completion",
                    reward.where,
                )
            )
        for i, value in enumerate(values):
            ok = value is None or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            if not ok and hasattr(value, "item"):  # numpy / torch scalars
                value = values[i] = value.item()
                ok = isinstance(value, int | float) and math.isfinite(value)
            if not ok:
                raise RewardFailed(
                    Problem(
                        f"{reward.source} returned {value!r} for {where[i] or 'a row'} (completion "
                        f"{_shorten(completions[i])}): rewards are finite numbers or None",
                        reward.where,
                    )
                )
        self.completions += len(values)
        self.nones += sum(value is None for value in values)
        return values

    def _failure(self, available: dict[str, Any], where: list[str], exc: Exception) -> RewardFailed:
        """The error for a call that raised, located at the first completion that raises alone."""
        n = len(available["completions"])
        row, completion = None, None
        for i in range(n):
            one = {
                k: v[i : i + 1] if isinstance(v, list) and len(v) == n else v
                for k, v in available.items()
            }
            try:
                self.reward.function(**self._arguments(one))
            except Exception as single:
                row, completion, exc = (
                    where[i] or f"completion {i}",
                    available["completions"][i],
                    single,
                )
                break
        at = f" on {row} (completion {_shorten(completion)})" if row is not None else ""
        return RewardFailed(
            Problem(
                f"the reward function {self.reward.source} ({self.reward.name}) raised "
                f"{type(exc).__name__}: {exc}{at}",
                self.reward.where,
            ),
            header="a reward function failed while training (fix the function or the data row):",
        )
