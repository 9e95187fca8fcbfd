"""Chat templates that render a conversation and record the character span of each assistant turn.

The named templates write the string themselves, so every assistant span (start marker through
end marker) is known while it is written. ``keep-original`` renders with the tokenizer's own
template and derives each span from the difference between the prefix before the assistant turn
(with the generation prompt) and the prefix that includes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from finetuning.config.data import ChatTemplateName
from finetuning.errors import UserError

Span = tuple[int, int]
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation.

    Attributes:
        text: The full string to tokenize.
        spans: Character spans [start, end) of the assistant turns (start marker, content, end
            marker), in order.
    """

    text: str
    spans: tuple[Span, ...]


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
        ("<|im_start|>", "<|im_end|>"),
        "<|im_end|>",
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
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
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n"
        "{% endif %}",
    ),
}


def render(
    name: ChatTemplateName,
    messages: Messages,
    tokenizer: Any,
    add_generation_prompt: bool = False,
) -> Rendered:
    """Render ``messages`` with the template ``name``, recording the assistant spans.

    Args:
        name: The template.
        messages: ``[{"role": ..., "content": ...}, ...]``.
        tokenizer: Supplies the BOS/EOS text (and, for keep-original, the template).
        add_generation_prompt: Append the assistant start marker (for prompts).
    """
    if name == ChatTemplateName.KEEP_ORIGINAL:
        return _render_original(messages, tokenizer, add_generation_prompt)
    eos = tokenizer.eos_token
    parts: list[str] = []
    spans: list[Span] = []
    pos = 0

    def write(text: str) -> None:
        nonlocal pos
        parts.append(text)
        pos += len(text)

    if name == ChatTemplateName.MISTRAL_WITH_SYSTEM:
        for m in messages:
            role, content = m["role"], m["content"]
            if role == "system":
                write(f"<<SYS>>\n{content}\n<</SYS>>\n")
            elif role == "user":
                write(f"[INST] {content} ")
                start = pos
                write("[/INST]")
                user_end = start
            elif role == "assistant":
                # The span starts at the preceding [/INST] marker, when there is one.
                start = user_end if parts and parts[-1] == "[/INST]" else pos
                write(content + eos)
                spans.append((start, pos))
                write(" ")
    elif name == ChatTemplateName.CHAT_ML:
        for m in messages:
            start = pos
            write(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>")
            if m["role"] == "assistant":
                spans.append((start, pos))
            write("\n")
        if add_generation_prompt:
            write("<|im_start|>assistant\n")
    elif name == ChatTemplateName.PORO:
        for m in messages:
            if m["role"] not in ("system", "user", "assistant"):
                continue
            start = pos
            write(f"<|{m['role']}|>\n{m['content']}{eos}")
            if m["role"] == "assistant":
                spans.append((start, pos))
        if add_generation_prompt:
            write("<|assistant|>\n")
    elif name == ChatTemplateName.SIMPLIFIED_LLAMA31:
        write(tokenizer.bos_token or "")
        for m in messages:
            start = pos
            write(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n")
            write(m["content"].strip() + "<|eot_id|>")
            if m["role"] == "assistant":
                spans.append((start, pos))
        if add_generation_prompt:
            write("<|start_header_id|>assistant<|end_header_id|>\n\n")
    else:  # pragma: no cover - the enum is exhaustive
        raise ValueError(name)
    return Rendered("".join(parts), tuple(spans))


def _apply(tokenizer: Any, messages: Messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _render_original(messages: Messages, tokenizer: Any, add_generation_prompt: bool) -> Rendered:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "data_conf.chat_template_name: keep-original needs a tokenizer with a chat template, "
            "and this tokenizer has none: choose a named template (chat-ml, "
            "mistral-with-system, poro, simplified-llama31)"
        )
    full = _apply(tokenizer, messages, add_generation_prompt)
    spans: list[Span] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _apply(tokenizer, messages[:i], True) if i else ""
        upto = _apply(tokenizer, messages[: i + 1], False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise TemplateMismatch(
                "the tokenizer's chat template renders earlier turns differently once later turns"
                " are added, so the assistant spans cannot be derived (use a named template)"
            )
        spans.append((len(before), len(upto)))
    return Rendered(full, tuple(spans))


class TemplateMismatch(ValueError):
    """keep-original: the template's prefixes are not prefixes of the full rendering."""


def end_marker(name: ChatTemplateName, tokenizer: Any) -> str:
    """The text that ends an assistant turn (what generation stops on)."""
    if name == ChatTemplateName.KEEP_ORIGINAL:
        return tokenizer.eos_token
    return SPECS[name].end_marker or tokenizer.eos_token
