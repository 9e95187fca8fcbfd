"""The ecosystem's dataset formats: detected per dataset and converted to our row shapes.

Rows in the formats other tools read (ShareGPT, Alpaca, TRL's prompt/completion, preference and
KTO columns, GRPO's ``prompt``) are converted, as they are read, into the shapes the rest of the
pipeline knows (``config.methods.Method.rows``): ``messages``; ``prompt_messages`` /
``chosen_messages`` / ``rejected_messages``; ``prompt_messages`` / ``completion_messages`` /
``label``; ``prompt_messages``; ``text``. Keys a format does not read stay in the row (metadata,
GRPO's reward columns).

A dataset's format is its ``format:`` key, or detected from its first row: the formats its
method accepts whose keys (and value kinds) the row has; where one fits with a superset of
another's keys, the larger one wins (``prompt``/``chosen``/``rejected`` over ``chosen``/
``rejected``); two that still fit are an ambiguity the user settles with ``format:``. A row
that is already in this engine's own shape for the method is read as it is, whatever else it
carries (a GRPO row's ``prompt`` column beside its ``prompt_messages`` is a reward column). Strings
become one user turn (a prompt) and one assistant turn (an answer), rendered by the run's chat
template.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetuning.config.methods import rows_of


class FormatError(ValueError):
    """A row does not fit its format (the message says why)."""


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def _turns(value: Any, role: str, key: str) -> list[dict[str, Any]]:
    """A conversation from a string (one ``role`` turn) or a list of messages (as it is)."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list):
        return value
    raise FormatError(f"`{key}` must be a string or a list of messages, got {type(value).__name__}")


def _same_kind(a: Any, b: Any) -> bool:
    return (isinstance(a, str) and isinstance(b, str)) or (_is_messages(a) and _is_messages(b))


def _take(record: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The keys of ``record`` a format did not read (metadata, reward columns)."""
    return {k: v for k, v in record.items() if k not in keys}


#: ShareGPT's ``from`` values and what they become (``function_call``: the assistant calls a
#: tool, its ``value`` the JSON call; ``observation``/``tool``: the tool's result).
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}


def _sharegpt_call(value: Any, where: str) -> list[dict[str, Any]]:
    try:
        calls = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}.value is not a JSON tool call ({exc.msg})") from None
    calls = calls if isinstance(calls, list) else [calls]
    out = []
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise FormatError(
                f'{where}.value must be a tool call {{"name": ..., "arguments": {{...}}}}'
            )
        arguments = call.get("arguments", {})
        out.append({"type": "function", "function": {"name": call["name"], "arguments": arguments}})
    return out


def _from_sharegpt(record: dict[str, Any]) -> dict[str, Any]:
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise FormatError("`conversations` must be a list of {from, value} turns")
    messages = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    for i, turn in enumerate(turns):
        where = f"conversations[{i}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise FormatError(f"{where} must be an object with `from` and `value`")
        source = turn["from"]
        if source not in SHAREGPT_ROLES:
            raise FormatError(
                f"{where}.from is {source!r}; ShareGPT roles are {', '.join(SHAREGPT_ROLES)}"
            )
        if source == "function_call":
            messages.append(
                {"role": "assistant", "tool_calls": _sharegpt_call(turn["value"], where)}
            )
        else:
            messages.append({"role": SHAREGPT_ROLES[source], "content": turn["value"]})
    out = {**_take(record, ("conversations", "system", "tools")), "messages": messages}
    tools = record.get("tools")
    if isinstance(tools, str) and tools.strip():
        try:
            tools = json.loads(tools)  # LLaMA-Factory keeps the tools as a JSON string
        except json.JSONDecodeError as exc:
            raise FormatError(f"`tools` is not valid JSON ({exc.msg})") from None
    if tools:
        out["tools"] = tools
    return out


def _from_alpaca(record: dict[str, Any]) -> dict[str, Any]:
    messages = []
    if isinstance(record.get("system"), str) and record["system"]:
        messages.append({"role": "system", "content": record["system"]})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise FormatError("`history` must be a list of [instruction, response] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise FormatError(f"history[{i}] must be an [instruction, response] pair")
        messages += [
            {"role": "user", "content": pair[0]},
            {"role": "assistant", "content": pair[1]},
        ]
    query = record["instruction"]
    if record.get("input"):
        query = f"{query}\n{record['input']}"  # joined as LLaMA-Factory joins them
    messages += [
        {"role": "user", "content": query},
        {"role": "assistant", "content": record["output"]},
    ]
    return {
        **_take(record, ("instruction", "input", "output", "system", "history")),
        "messages": messages,
    }


def _from_prompt_completion(record: dict[str, Any]) -> dict[str, Any]:
    prompt = _turns(record["prompt"], "user", "prompt")
    completion = _turns(record["completion"], "assistant", "completion")
    return {**_take(record, ("prompt", "completion")), "messages": prompt + completion}


def _from_explicit_preference(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **_take(record, ("prompt", "chosen", "rejected")),
        "prompt_messages": _turns(record["prompt"], "user", "prompt"),
        "chosen_messages": _turns(record["chosen"], "assistant", "chosen"),
        "rejected_messages": _turns(record["rejected"], "assistant", "rejected"),
    }


def _from_implicit_preference(record: dict[str, Any]) -> dict[str, Any]:
    chosen, rejected = record["chosen"], record["rejected"]
    if not (_is_messages(chosen) and _is_messages(rejected)):
        raise FormatError("`chosen` and `rejected` must both be lists of messages")
    shared = 0  # the prompt is the turns both conversations share (TRL's extract_prompt)
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == len(chosen) or shared == len(rejected):
        raise FormatError(
            "`chosen` and `rejected` do not diverge: one conversation is all of the other, so "
            "there are no two answers to compare"
        )
    return {
        **_take(record, ("prompt", "chosen", "rejected")),
        "prompt_messages": chosen[:shared],
        "chosen_messages": chosen[shared:],
        "rejected_messages": rejected[shared:],
    }


def _from_kto(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **_take(record, ("prompt", "completion", "label")),
        "prompt_messages": _turns(record["prompt"], "user", "prompt"),
        "completion_messages": _turns(record["completion"], "assistant", "completion"),
        "label": record["label"],
    }


def _from_prompt(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **_take(record, ("prompt",)),
        "prompt_messages": _turns(record["prompt"], "user", "prompt"),
    }


def _has(*keys: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: all(k in r for k in keys)


@dataclass(frozen=True)
class Format:
    """One dataset format.

    Attributes:
        name: The ``format:`` value.
        shape: The row shape it becomes (``config.methods.Method.rows``).
        keys: The keys a row must have, for detection and messages.
        describe: The keys in words, for messages and the docs.
        fits: Whether a row is one of this format (keys and value kinds).
        convert: The row in our shape (None: it is ours already); raises :class:`FormatError`.
    """

    name: str
    shape: str
    keys: tuple[str, ...]
    describe: str
    fits: Callable[[dict[str, Any]], bool]
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("messages", "chat", ("messages",), "`messages`", _has("messages")),
        Format(
            "sharegpt",
            "chat",
            ("conversations",),
            "`conversations` of {`from`, `value`} turns, optional `system`, `tools`",
            lambda r: (
                isinstance(r.get("conversations"), list)
                and all(isinstance(t, dict) and "from" in t for t in r["conversations"])
            ),
            _from_sharegpt,
        ),
        Format(
            "alpaca",
            "chat",
            ("instruction", "output"),
            "`instruction`, `output`, optional `input`, `system`, `history`",
            lambda r: isinstance(r.get("instruction"), str) and isinstance(r.get("output"), str),
            _from_alpaca,
        ),
        Format(
            "prompt-completion",
            "chat",
            ("prompt", "completion"),
            "`prompt`, `completion` (strings or lists of messages)",
            lambda r: _same_kind(r.get("prompt"), r.get("completion")),
            _from_prompt_completion,
        ),
        Format("text", "text", ("text",), "`text`", _has("text")),
        Format(
            "preference",
            "preference",
            ("prompt_messages", "chosen_messages", "rejected_messages"),
            "`prompt_messages`, `chosen_messages`, `rejected_messages`",
            _has("prompt_messages", "chosen_messages", "rejected_messages"),
        ),
        Format(
            "prompt-chosen-rejected",
            "preference",
            ("prompt", "chosen", "rejected"),
            "`prompt`, `chosen`, `rejected` (strings or lists of messages)",
            lambda r: "rejected" in r and _same_kind(r.get("prompt"), r.get("chosen")),
            _from_explicit_preference,
        ),
        Format(
            "chosen-rejected",
            "preference",
            ("chosen", "rejected"),
            "`chosen`, `rejected`: two whole conversations sharing the prompt (no `prompt` list)",
            lambda r: (
                _is_messages(r.get("chosen"))
                and _is_messages(r.get("rejected"))
                and not _is_messages(r.get("prompt"))
            ),
            _from_implicit_preference,
        ),
        Format(
            "kto",
            "unpaired",
            ("prompt_messages", "completion_messages", "label"),
            "`prompt_messages`, `completion_messages`, `label`",
            _has("prompt_messages", "completion_messages", "label"),
        ),
        Format(
            "prompt-completion-label",
            "unpaired",
            ("prompt", "completion", "label"),
            "`prompt`, `completion` (strings or lists of messages), `label`",
            lambda r: "label" in r and _same_kind(r.get("prompt"), r.get("completion")),
            _from_kto,
        ),
        Format(
            "prompt-messages",
            "prompt",
            ("prompt_messages",),
            "`prompt_messages`",
            _has("prompt_messages"),
        ),
        Format(
            "prompt",
            "prompt",
            ("prompt",),
            "`prompt` (a string or a list of messages)",
            lambda r: isinstance(r.get("prompt"), str) or _is_messages(r.get("prompt")),
            _from_prompt,
        ),
    )
}


def formats_for(method: str) -> list[Format]:
    """The formats ``method``'s data may have (KTO takes the preference ones too, unpaired)."""
    shapes = {rows_of(method)} | ({"preference"} if rows_of(method) == "unpaired" else set())
    return [f for f in FORMATS.values() if f.shape in shapes]


def own_format(method: str) -> Format:
    """This engine's own format for ``method``'s rows."""
    return next(f for f in FORMATS.values() if f.shape == rows_of(method) and f.convert is None)


def listing(method: str) -> str:
    """The formats of ``method`` and their keys, for messages."""
    return "; ".join(f"{f.name} ({f.describe})" for f in formats_for(method))


def detect(record: dict[str, Any], method: str) -> Format | None:
    """The format ``record`` is in, or None when it fits none of ``method``'s.

    Raises:
        FormatError: The row fits two formats (neither's keys include the other's).
    """
    fitting = [f for f in formats_for(method) if f.fits(record)]
    own = own_format(method)
    if own in fitting:  # already our shape: the other keys are the row's own columns
        return own
    fitting = [f for f in fitting if not any(set(f.keys) < set(g.keys) for g in fitting)]
    if len(fitting) > 1:
        names = " and ".join(f"{f.name} ({f.describe})" for f in fitting)
        raise FormatError(
            f"the row fits two formats, {names}: set `format:` on the dataset to choose"
        )
    return fitting[0] if fitting else None


def renamed(record: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``record`` with the columns renamed to the keys a format reads (``{ours: theirs}``).

    Raises:
        FormatError: A column to rename is not in the row.
    """
    if not columns:
        return record
    missing = [theirs for theirs in columns.values() if theirs not in record]
    if missing:
        raise FormatError(
            f"has no column `{missing[0]}` (named in `columns:`); its keys: "
            f"{', '.join(sorted(map(str, record))) or '(none)'}"
        )
    taken = set(columns.values())
    out = {k: v for k, v in record.items() if k not in taken}
    out.update({ours: record[theirs] for ours, theirs in columns.items()})
    return out


def converted(record: dict[str, Any], fmt: Format) -> dict[str, Any]:
    """``record`` in our row shape.

    Raises:
        FormatError: The row does not have the format's keys, or its values do not convert.
    """
    if fmt.convert is None:
        return record
    if not fmt.fits(record):
        missing = [k for k in fmt.keys if k not in record]
        what = f"missing `{'`, `'.join(missing)}`" if missing else "the values do not fit"
        raise FormatError(f"{what}: a {fmt.name} row has {fmt.describe}")
    return fmt.convert(record)
