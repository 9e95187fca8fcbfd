"""Reading tool calls and reasoning back out of generated text, and the ``--tools`` file.

The named templates teach the model to write reasoning as ``<think>\\n...\\n</think>\\n\\n`` and calls
as ``<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`` (chat-ml) or as JSON lines
``{"name": ..., "parameters": ...}`` (simplified-llama31); both are recognised, so an answer
becomes an assistant message with ``content``, ``reasoning_content`` and ``tool_calls``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from finetuning.data.messages import check_tools
from finetuning.errors import UserError

_THINK = re.compile(r"^\s*<think>\n?(.*?)\n?</think>\s*", re.DOTALL)
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def read_tools(path: str | Path | None) -> list[dict[str, Any]] | None:
    """The function schemas in a ``--tools`` JSON file (a list, or ``{"tools": [...]}``).

    Raises:
        UserError: The file is missing, not JSON, or not a list of function schemas.
    """
    if path is None:
        return None
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--tools: file not found: {path}")
    try:
        tools = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--tools: {path} is not valid JSON: {exc}") from None
    if isinstance(tools, dict) and "tools" in tools:
        tools = tools["tools"]
    if problem := check_tools(tools):
        raise UserError(f"--tools: {path}: {problem}")
    return tools


def _call(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    return {"type": "function", "function": {"name": obj["name"], "arguments": arguments}}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def parse_answer(text: str) -> dict[str, Any]:
    """An assistant message from generated text: content, reasoning and tool calls.

    A ``<tool_call>`` block that is not valid JSON stays in the content (the model got the
    format wrong, and the user should see it).
    """
    message: dict[str, Any] = {"role": "assistant"}
    if match := _THINK.match(text):
        message["reasoning_content"] = match.group(1)
        text = text[match.end() :]
    calls: list[dict[str, Any]] = []

    def take(match: re.Match) -> str:
        call = _call(_json(match.group(1)))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    text = _HERMES.sub(take, text)
    if not calls:  # Llama 3.1 style: calls are whole lines of JSON
        kept = []
        for line in text.split("\n"):
            call = _call(_json(line.strip())) if line.strip().startswith("{") else None
            if call is None:
                kept.append(line)
            else:
                calls.append(call)
        text = "\n".join(kept)
    message["content"] = text.strip()
    if calls:
        message["tool_calls"] = calls
    return message


def describe_calls(message: dict[str, Any]) -> str:
    """One line per tool call, ``tool call: NAME {arguments}``, for the terminal."""
    return "".join(
        f"tool call: {c['function']['name']} "
        f"{json.dumps(c['function']['arguments'], ensure_ascii=False)}\n"
        for c in message.get("tool_calls", [])
    )
