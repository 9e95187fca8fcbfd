"""The built-in reward functions of ``grpo_args.rewards`` (pure Python: strings in, floats out).

Each takes the decoded ``completions`` (one string per completion, special tokens removed) and
returns one float per completion; the other parameters are filled from the row (``answer``),
from the reward's ``kwargs`` in the config (``pattern``, ``target``) or by the trainer
(``completion_ids``). A user's reward function has the same form (see ``docs/grpo.md``).
"""

from __future__ import annotations

import re
from typing import Any

_BOXED = "\\boxed{"
_THINK = re.compile(r"\s*<think>(.*?)</think>(.*)", re.DOTALL)


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (braces inside may nest), or None."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth, i = 1, start + len(_BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(_BOXED) : i - 1]
        start = text.rfind(_BOXED, 0, start)  # unclosed: try the one before it
    return None


def normalise(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped."""
    return " ".join(text.split())


def final_answer(completion: str) -> str:
    """The answer a completion gives: its last ``\\boxed{...}``, else its last non-empty line.

    The result is whitespace-normalised (:func:`normalise`); "" when the completion is blank.
    """
    boxed = last_boxed(completion)
    if boxed is not None:
        return normalise(boxed)
    lines = [line for line in completion.splitlines() if line.strip()]
    return normalise(lines[-1]) if lines else ""


def exact_answer(completions: list[str], answer: list[Any], **kwargs: Any) -> list[float]:
    """1.0 where the completion's final answer equals the row's ``answer``, else 0.0.

    The final answer is the last ``\\boxed{...}``, else the last non-empty line; both sides are
    compared as whitespace-normalised strings (``answer: 42`` and ``answer: "42"`` are the same).
    """
    return [
        float(final_answer(c) == normalise(str(a)))
        for c, a in zip(completions, answer, strict=True)
    ]


def regex_format(
    completions: list[str], pattern: str, search: bool = False, **kwargs: Any
) -> list[float]:
    """1.0 where the completion matches ``pattern`` (a Python regex), else 0.0.

    The whole completion, ends stripped, must match (``re.fullmatch``, ``.`` matching newlines);
    with ``search: true`` a match anywhere is enough.
    """
    compiled = re.compile(pattern, re.DOTALL)
    match = compiled.search if search else compiled.fullmatch
    return [float(match(c.strip()) is not None) for c in completions]


def length(
    completions: list[str],
    completion_ids: list[list[int]],
    target: int,
    unit: str = "tokens",
    **kwargs: Any,
) -> list[float]:
    """Closeness to a target length: ``max(0, 1 - |n - target| / target)``.

    ``n`` is the completion's length in ``unit``: "tokens" (generated ids, the end marker
    included) or "chars" (the decoded text). 1.0 at the target, 0.0 at twice it or at 0.
    """
    if unit not in ("tokens", "chars"):
        raise ValueError(f"unit must be 'tokens' or 'chars', got {unit!r}")
    sizes = [len(ids) for ids in completion_ids] if unit == "tokens" else map(len, completions)
    return [max(0.0, 1.0 - abs(n - target) / target) for n in sizes]


def think_format(completions: list[str], **kwargs: Any) -> list[float]:
    """1.0 where the completion is a ``<think>...</think>`` block followed by a non-empty answer.

    Only whitespace may come before ``<think>``; the answer after ``</think>`` must have a
    non-blank character and no second ``<think>``.
    """
    scores = []
    for c in completions:
        found = _THINK.fullmatch(c)
        ok = found is not None and found.group(2).strip() != "" and "<think>" not in found.group(2)
        scores.append(float(ok))
    return scores


#: The built-ins by the name ``grpo_args.rewards[].function`` gives them.
BUILTINS = {f.__name__: f for f in (exact_answer, regex_format, length, think_format)}
