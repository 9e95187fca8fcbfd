"""The messages of a row: checking roles, contents, tool calls, tool results and reasoning.

Rows follow the Hugging Face / OpenAI convention: ``{"messages": [...], "tools": [...]}``, where
an assistant message may carry ``tool_calls`` (then its ``content`` may be empty or absent) and
``reasoning_content``, and a ``tool`` message carries a tool's result in ``content`` (optionally
with ``name`` and ``tool_call_id``).
"""

from __future__ import annotations

import json
from typing import Any

from finetuning.data.images import check_parts

#: Message keys that make a row a tool or reasoning row (templates without support refuse them).
TOOL_KEYS = ("tool_calls", "reasoning_content")


def _present(message: dict[str, Any], key: str) -> bool:
    # Columnar sources (Parquet, Arrow) fill absent struct fields with null.
    return message.get(key) is not None


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's ``arguments`` as an object (they may be given as a JSON string).

    Raises:
        ValueError: The arguments are not an object or a JSON string holding one.
    """
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg})") from None
    if not isinstance(arguments, dict):
        raise ValueError(f"must be a JSON object, got {type(arguments).__name__}")
    return arguments


def tool_calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``function`` parts (name, arguments as an object) of a message's tool calls."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        calls.append(
            {"name": function["name"], "arguments": parse_arguments(function["arguments"])}
        )
    return calls


def tool_name(tool: dict[str, Any]) -> Any:
    """The function name of a tool schema (``{"type": "function", "function": {...}}`` or flat)."""
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    return function.get("name")


def check_tools(value: Any) -> str:
    """An empty string for a good ``tools`` list, else what is wrong with it."""
    if not isinstance(value, list):
        return f"`tools` must be a list of function schemas, got {type(value).__name__}"
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool_name(tool), str):
            return (
                f"tools[{i}] must be a function schema with a name, e.g. "
                '{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}'
            )
    return ""


def _check_calls(calls: Any, where: str) -> str:
    if not isinstance(calls, list) or not calls:
        return f"{where}.tool_calls must be a non-empty list"
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            return f"{at} must be an object"
        if call.get("type", "function") not in ("function", None):
            return f"{at}.type must be 'function', got {call['type']!r}"
        function = call.get("function")
        if not isinstance(function, dict):
            return f'{at} needs `function`: {{"name": ..., "arguments": ...}}'
        if not isinstance(function.get("name"), str) or not function["name"]:
            return f"{at}.function.name must be a non-empty string"
        if "arguments" not in function:
            return f"{at}.function has no `arguments`"
        try:
            parse_arguments(function["arguments"])
        except ValueError as exc:
            return f"{at}.function.arguments {exc}"
    return ""


def _check_message(message: Any, where: str, previous: dict[str, Any] | None) -> str:
    if not isinstance(message, dict):
        return f"{where} must be an object with `role` and `content`"
    if "role" not in message:
        return f"{where} has no `role`"
    if not isinstance(message["role"], str):
        return f"{where}.role must be a string, got {type(message['role']).__name__}"
    role = message["role"]
    calls = _present(message, "tool_calls")
    if calls:
        if role != "assistant":
            return f"{where}: only assistant messages carry `tool_calls`"
        if problem := _check_calls(message["tool_calls"], where):
            return problem
    # An assistant message that calls tools may have no content.
    if not calls or _present(message, "content"):
        if "content" not in message or (message["content"] is None and not calls):
            return f"{where} has no `content`"
        if isinstance(message["content"], list):  # content parts: text and images
            if problem := check_parts(message["content"], where):
                return problem
        elif not isinstance(message["content"], str):
            return f"{where}.content must be a string, got {type(message['content']).__name__}"
    if _present(message, "reasoning_content"):
        if role != "assistant":
            return f"{where}: only assistant messages carry `reasoning_content`"
        if not isinstance(message["reasoning_content"], str):
            got = type(message["reasoning_content"]).__name__
            return f"{where}.reasoning_content must be a string, got {got}"
    if role == "tool":
        for key in ("name", "tool_call_id"):
            if _present(message, key) and not isinstance(message[key], str):
                return f"{where}.{key} must be a string, got {type(message[key]).__name__}"
        follows_call = previous is not None and (
            previous.get("role") == "tool"
            or (previous.get("role") == "assistant" and _present(previous, "tool_calls"))
        )
        if not follows_call:
            return (
                f"{where} is a tool result but does not follow an assistant message with "
                "`tool_calls`"
            )
    return ""


def check_messages(value: Any, key: str, allow_empty: bool = False) -> str:
    """An empty string for a good message list, else what is wrong (naming the message index)."""
    if not isinstance(value, list):
        return f"`{key}` must be a list of messages, got {type(value).__name__}"
    if not value and not allow_empty:
        return f"`{key}` is an empty conversation"
    previous = None
    for i, message in enumerate(value):
        if problem := _check_message(message, f"{key}[{i}]", previous):
            return problem
        previous = message
    return ""


def unknown_calls(messages: list[dict[str, Any]], key: str, tools: list[Any]) -> list[str]:
    """Warnings for tool calls whose function is not among ``tools``."""
    names = {tool_name(t) for t in tools}
    warnings = []
    for i, message in enumerate(messages):
        for j, call in enumerate(message.get("tool_calls") or []):
            name = call["function"]["name"]
            if name not in names:
                warnings.append(
                    f"{key}[{i}].tool_calls[{j}] calls {name!r}, which is not in `tools`"
                )
    return warnings


def is_agent_row(row: dict[str, Any]) -> bool:
    """Whether a row carries tools, tool calls, tool results or reasoning."""
    if row.get("tools"):
        return True
    lists = [row.get(k) or [] for k in ("messages", "prompt_messages", "chosen_messages")]
    lists.append(row.get("rejected_messages") or [])
    return any(
        m.get("role") == "tool" or any(_present(m, k) for k in TOOL_KEYS)
        for messages in lists
        for m in messages
    )


def without_past_reasoning(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with ``reasoning_content`` left out of every assistant turn but the last.

    This is what Qwen3-style templates do when rendering history; training on the same shape
    keeps training and serving alike.
    """
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=-1)
    return [
        {k: v for k, v in m.items() if k != "reasoning_content"}
        if i != last and "reasoning_content" in m
        else m
        for i, m in enumerate(messages)
    ]
