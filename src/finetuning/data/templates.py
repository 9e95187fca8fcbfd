"""Chat templates that render a conversation and record the character span of each assistant turn.

The named templates write the string themselves, so every assistant span (start marker through
end marker) is known while it is written. ``keep-original`` renders with the tokenizer's own
template and derives each span from the difference between the prefix before the assistant turn
(with the generation prompt) and the prefix that includes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from finetuning.config.data import ChatTemplateName
from finetuning.data import jinja
from finetuning.errors import UserError

Span = tuple[int, int]
Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation.

    Attributes:
        text: The full string to tokenize.
        spans: Character spans [start, end) of the assistant turns (start marker, reasoning,
            content, tool calls, end marker), in order.
        reasoning: Character spans of the reasoning inside them (masked when it is not trained).
    """

    text: str
    spans: tuple[Span, ...]
    reasoning: tuple[Span, ...] = ()


@dataclass(frozen=True)
class TemplateSpec:
    """What a named template adds to the tokenizer and which token ends an assistant turn.

    Attributes:
        added_tokens: Special tokens added to the vocabulary when missing.
        end_marker: The assistant end-of-turn text; None means the tokenizer's EOS.
        jinja: The equivalent Jinja template stored in the saved tokenizer for inference.
    """

    added_tokens: tuple[str, ...]
    end_marker: str | None
    jinja: str


SPECS: dict[ChatTemplateName, TemplateSpec] = {
    ChatTemplateName.MISTRAL_WITH_SYSTEM: TemplateSpec(
        (),
        None,
        "{% for m in messages %}{% if m['role'] == 'system' %}<<SYS>>\n{{ m['content'] }}\n"
        "<</SYS>>\n{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }} {% endif %}"
        "{% endfor %}",
    ),
    ChatTemplateName.CHAT_ML: TemplateSpec(
        ("<|im_start|>", "<|im_end|>"), "<|im_end|>", jinja.CHAT_ML
    ),
    ChatTemplateName.PORO: TemplateSpec(
        ("<|user|>", "<|assistant|>"),
        None,
        "{% for m in messages %}{% if m['role'] in ['system', 'user', 'assistant'] %}"
        "<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    ),
    ChatTemplateName.SIMPLIFIED_LLAMA31: TemplateSpec(
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|eot_id|>",
        jinja.SIMPLIFIED_LLAMA31,
    ),
}

#: The templates that render tools, tool calls, tool results and reasoning.
TOOL_TEMPLATES = (
    ChatTemplateName.CHAT_ML,
    ChatTemplateName.SIMPLIFIED_LLAMA31,
    ChatTemplateName.KEEP_ORIGINAL,
)


class TemplateMismatch(ValueError):
    """keep-original: the template's prefixes are not prefixes of the full rendering."""


class UnsupportedRow(ValueError):
    """The template cannot render what the row holds (tools, tool calls or reasoning)."""


class _Writer:
    """Collects the rendered text and the assistant and reasoning spans while writing."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.spans: list[Span] = []
        self.reasoning: list[Span] = []

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.pos += len(text)

    def think(self, message: dict[str, Any]) -> None:
        """The reasoning block before the answer (its span is recorded for masking)."""
        if message.get("reasoning_content"):
            start = self.pos
            self.write(f"<think>\n{message['reasoning_content']}\n</think>\n\n")
            self.reasoning.append((start, self.pos))

    def result(self) -> Rendered:
        return Rendered("".join(self.parts), tuple(self.spans), tuple(self.reasoning))


def _call_json(call: dict[str, Any], arguments_key: str) -> str:
    """``{"name": ..., "arguments": ...}``; arguments given as a JSON string are written as is."""
    function = call["function"]
    args = function["arguments"]
    args = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    name = json.dumps(function["name"], ensure_ascii=False)
    return f'{{"name": {name}, "{arguments_key}": {args}}}'


def _split_system(messages: Messages, tools: list | None) -> tuple[str | None, Messages]:
    """With tools, the system turn also lists them: take the first system message out."""
    if tools and messages and messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def _chat_ml(w: _Writer, messages: Messages, tools: list | None, gen: bool) -> None:
    system, messages = _split_system(messages, tools)
    if tools:
        listed = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        intro = system + "\n\n" if system is not None else ""
        w.write(
            f"<|im_start|>system\n{intro}{jinja.CHATML_TOOLS_INTRO}{listed}"
            f"{jinja.CHATML_TOOLS_OUTRO}<|im_end|>\n"
        )
    for i, m in enumerate(messages):
        role = m["role"]
        if role == "assistant":
            start = w.pos
            w.write("<|im_start|>assistant\n")
            w.think(m)
            content = m.get("content") or ""
            w.write(content)
            for j, call in enumerate(m.get("tool_calls") or []):
                sep = "\n" if j or content else ""
                w.write(f"{sep}<tool_call>\n{_call_json(call, 'arguments')}\n</tool_call>")
            w.write("<|im_end|>")
            w.spans.append((start, w.pos))
            w.write("\n")
        elif role == "tool":
            # Consecutive tool results share one user turn (the Hermes / Qwen2.5 convention).
            if i == 0 or messages[i - 1]["role"] != "tool":
                w.write("<|im_start|>user")
            w.write(f"\n<tool_response>\n{m['content']}\n</tool_response>")
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                w.write("<|im_end|>\n")
        else:
            w.write(f"<|im_start|>{role}\n{m['content']}<|im_end|>\n")
    if gen:
        w.write("<|im_start|>assistant\n")


def _llama31(w: _Writer, messages: Messages, tools: list | None, bos: str, gen: bool) -> None:
    w.write(bos)
    system, messages = _split_system(messages, tools)
    if tools:
        listed = "".join(json.dumps(t, indent=4, ensure_ascii=False) + "\n\n" for t in tools)
        w.write(
            f"<|start_header_id|>system<|end_header_id|>\n\n{jinja.LLAMA31_TOOLS_INTRO}{listed}"
            f"{(system or '').strip()}<|eot_id|>"
        )
    for m in messages:
        start = w.pos
        # Llama 3.1 gives tool results the `ipython` role.
        role = "ipython" if m["role"] == "tool" else m["role"]
        w.write(f"<|start_header_id|>{role}<|end_header_id|>\n\n")
        w.think(m)
        content = (m.get("content") or "").strip()
        w.write(content)
        for j, call in enumerate(m.get("tool_calls") or []):
            w.write(("\n" if j or content else "") + _call_json(call, "parameters"))
        w.write("<|eot_id|>")
        if m["role"] == "assistant":
            w.spans.append((start, w.pos))
    if gen:
        w.write("<|start_header_id|>assistant<|end_header_id|>\n\n")


def _refuse_agent_rows(name: ChatTemplateName, messages: Messages, tools: list | None) -> None:
    if tools or any(
        m["role"] == "tool" or m.get("tool_calls") or m.get("reasoning_content") for m in messages
    ):
        supported = ", ".join(t.value for t in TOOL_TEMPLATES)
        raise UnsupportedRow(
            f"data_conf.chat_template_name: {name.value} cannot render tools, tool calls, tool "
            f"results or reasoning, and this row has them: use a template that supports them "
            f"({supported}; keep-original needs a tokenizer whose own template renders tools)"
        )


def render(
    name: ChatTemplateName,
    messages: Messages,
    tokenizer: Any,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
) -> Rendered:
    """Render ``messages`` with the template ``name``, recording the assistant spans.

    Args:
        name: The template.
        messages: ``[{"role": ..., "content": ...}, ...]``, assistant messages optionally with
            ``tool_calls`` and ``reasoning_content``, ``tool`` messages with tool results.
        tokenizer: Supplies the BOS/EOS text (and, for keep-original, the template).
        add_generation_prompt: Append the assistant start marker (for prompts).
        tools: The function schemas the conversation may call (rendered in the system turn).

    Raises:
        UnsupportedRow: mistral-with-system or poro and a row with tools or reasoning.
        TemplateMismatch: keep-original and a template whose prefixes are not stable.
    """
    if name == ChatTemplateName.KEEP_ORIGINAL:
        return render_original(messages, tokenizer, add_generation_prompt, tools)
    w = _Writer()
    if name == ChatTemplateName.CHAT_ML:
        _chat_ml(w, messages, tools, add_generation_prompt)
        return w.result()
    if name == ChatTemplateName.SIMPLIFIED_LLAMA31:
        _llama31(w, messages, tools, tokenizer.bos_token or "", add_generation_prompt)
        return w.result()
    _refuse_agent_rows(name, messages, tools)
    eos = tokenizer.eos_token
    if name == ChatTemplateName.MISTRAL_WITH_SYSTEM:
        user_end = 0
        for m in messages:
            role, content = m["role"], m["content"]
            if role == "system":
                w.write(f"<<SYS>>\n{content}\n<</SYS>>\n")
            elif role == "user":
                w.write(f"[INST] {content} ")
                user_end = w.pos
                w.write("[/INST]")
            elif role == "assistant":
                # The span starts at the preceding [/INST] marker, when there is one.
                start = user_end if w.parts and w.parts[-1] == "[/INST]" else w.pos
                w.write(content + eos)
                w.spans.append((start, w.pos))
                w.write(" ")
    elif name == ChatTemplateName.PORO:
        for m in messages:
            if m["role"] not in ("system", "user", "assistant"):
                continue
            start = w.pos
            w.write(f"<|{m['role']}|>\n{m['content']}{eos}")
            if m["role"] == "assistant":
                w.spans.append((start, w.pos))
        if add_generation_prompt:
            w.write("<|assistant|>\n")
    else:  # pragma: no cover - the enum is exhaustive
        raise ValueError(name)
    return w.result()


def apply_original(
    tokenizer: Any, messages: Messages, add_generation_prompt: bool, tools: list | None
) -> str:
    """The tokenizer's own template applied to ``messages`` (keep-original), as text."""
    from jinja2 import TemplateError

    extra = {"tools": tools} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )
    except (TypeError, KeyError, IndexError, AttributeError) as exc:
        # The template's own code failed on this row's shape (e.g. DeepSeek concatenating tool
        # call arguments given as an object): the row's problem, reported as the template's.
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def inserted(longer: str, shorter: str, lowest: int) -> Span:
    """The span of ``longer`` that is not in ``shorter`` (their common prefix and suffix removed).

    An insertion between equal characters is ambiguous (``<`` + ``<think>R</think>\n`` +
    ``call>``): the leftmost position not before ``lowest`` is taken, as templates put reasoning
    first in the turn.
    """
    prefix = 0
    limit = min(len(longer), len(shorter))
    while prefix < limit and longer[prefix] == shorter[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and longer[-1 - suffix] == shorter[-1 - suffix]:
        suffix += 1
    end = len(longer) - suffix
    while prefix > lowest and end > prefix and longer[prefix - 1] == longer[end - 1]:
        prefix, end = prefix - 1, end - 1
    return prefix, end


def render_original(
    messages: Messages,
    tokenizer: Any,
    add_generation_prompt: bool,
    tools: list | None,
    strict: bool = True,
) -> Rendered:
    """keep-original: the whole conversation, each assistant span from prefix differences.

    Raises:
        TemplateMismatch: ``strict`` and a template that renders an earlier turn differently
            once later turns follow (or a turn that does not continue its generation prompt).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "data_conf.chat_template_name: keep-original needs a tokenizer with a chat template, "
            "and this tokenizer has none: choose a named template (chat-ml, "
            "mistral-with-system, poro, simplified-llama31)"
        )
    full = apply_original(tokenizer, messages, add_generation_prompt, tools)
    spans: list[Span] = []
    reasoning: list[Span] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = apply_original(tokenizer, messages[:i], True, tools) if i else ""
        upto = apply_original(tokenizer, messages[: i + 1], False, tools)
        if not (upto.startswith(before) and full.startswith(upto)):
            if not strict:
                continue
            raise TemplateMismatch(
                "the tokenizer's chat template renders earlier turns differently once later turns"
                " are added, so the whole conversation cannot be trained as one example: use "
                "data_conf.history_rule: auto or per-turn (one example per assistant turn, as the"
                " model sees it when generating that turn), or a named template"
            )
        spans.append((len(before), len(upto)))
        if m.get("reasoning_content"):
            # Where the template wrote the reasoning: what the turn loses without it.
            plain = {k: v for k, v in m.items() if k != "reasoning_content"}
            plain_text = apply_original(tokenizer, [*messages[:i], plain], False, tools)
            s, e = inserted(upto, plain_text, len(before))
            s, e = max(s, len(before)), min(e, len(upto))
            if e > s:
                reasoning.append((s, e))
    return Rendered(full, tuple(spans), tuple(reasoning))


def end_marker(name: ChatTemplateName, tokenizer: Any) -> str:
    """The text that ends an assistant turn (what generation stops on)."""
    if name == ChatTemplateName.KEEP_ORIGINAL:
        return tokenizer.eos_token
    return SPECS[name].end_marker or tokenizer.eos_token
