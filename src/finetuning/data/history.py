"""keep-original: which training examples a conversation gives (``data_conf.history_rule``).

Many model templates rewrite history: Qwen3 drops the reasoning of past turns, GPT-OSS its
analysis channel, DeepSeek and Nemotron pre-fill ``<think>`` in the generation prompt but not in
rendered turns. For such a template the whole conversation, rendered once, is not what the model
saw when it generated each turn, so the spans cannot come from prefix differences, and training
on it would teach turns in a context the model never meets. The rule here is exact with respect
to inference:

* **whole** (``auto`` where the template is prefix-preserving for the row): the conversation is
  rendered once and every assistant turn is trained; each turn's span is the difference between
  the rendering up to it (with the generation prompt) and the rendering that includes it.
* **per turn** (``auto`` otherwise, or ``per-turn``): one example per assistant turn, the
  conversation up to that turn rendered with the generation prompt (the prompt the model gets at
  inference), followed by the turn as the template renders it, and only the turn trained.
  Where the generation prompt pre-fills text the rendered turn does not start with (DeepSeek's
  ``<think>\\n``, Nemotron's), the turn continues after the pre-fill: what the rendered turn
  has before the pre-filled text (e.g. reasoning a no-think template skips) is not generated at
  inference and is left out, which the content check below then reports.
* **last turn** (``last-turn``): the per-turn example of the last assistant turn only.

A template with ``{% generation %}`` blocks gives the spans directly (transformers' assistant
masks); they replace the differences, clipped to the trained turn in a per-turn example.

Whatever a trained turn carries (tool calls, reasoning) and the row's ``tools`` must appear in
the example's text: a template that silently drops them is refused, naming the row, unless
``data_conf.allow_unrendered_content`` says the user means it.
"""

from __future__ import annotations

import re
import weakref
from typing import Any

from finetuning.config.data import ChatTemplateName, HistoryRule
from finetuning.data.messages import tool_calls, tool_name
from finetuning.data.templates import (
    TOOL_TEMPLATES,
    Messages,
    Rendered,
    Span,
    TemplateMismatch,
    UnsupportedRow,
    apply_original,
    inserted,
    render,
    render_original,
)

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_blocks(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template marks assistant output with ``{% generation %}``."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and bool(_GENERATION.search(template))


def generation_spans(
    tokenizer: Any, messages: Messages, add_generation_prompt: bool, tools: list | None
) -> tuple[str, list[Span]]:
    """The rendering and its ``{% generation %}`` spans, as transformers' assistant masks see it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
    texts, indices = render_jinja_template(
        conversations=[chat],
        tools=tools or None,
        chat_template=tokenizer.chat_template,
        return_assistant_tokens_mask=True,
        add_generation_prompt=add_generation_prompt,
        **tokenizer.special_tokens_map,
    )
    return texts[0], [(int(s), int(e)) for s, e in indices[0] if e > s]


def _token_boundary(tokenizer: Any, a: str, b: str) -> int:
    """The end of the longest run of equal leading tokens of ``a`` and ``b`` (in characters).

    A character prefix could end inside a marker the two texts merely begin alike
    (``<｜Assistant｜><think>`` and ``<｜Assistant｜><｜end▁of▁sentence｜>`` share ``<``).
    """
    ea = tokenizer(a, add_special_tokens=False, return_offsets_mapping=True)
    eb = tokenizer(b, add_special_tokens=False, return_offsets_mapping=True)
    end = 0
    for ia, ib, oa, ob in zip(
        ea["input_ids"], eb["input_ids"], ea["offset_mapping"], eb["offset_mapping"], strict=False
    ):
        if ia != ib or tuple(oa) != tuple(ob):
            break
        end = oa[1]
    return end


_MARKERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _markers(tokenizer: Any) -> tuple[str, ...]:
    """The texts that can end an assistant turn: the tokenizer's added and special tokens."""
    key = (len(tokenizer), tokenizer.eos_token)
    cached = _MARKERS.get(tokenizer)
    if cached is None or cached[0] != key:  # once per tokenizer, not per turn
        found = set(getattr(tokenizer, "added_tokens_encoder", {}) or {})
        found.update(t for t in (tokenizer.eos_token, tokenizer.bos_token) if t)
        cached = (key, tuple(sorted(found, key=len, reverse=True)))
        _MARKERS[tokenizer] = cached
    return cached[1]


def ends_with_marker(tokenizer: Any, turn: str) -> bool:
    """Whether a rendered turn ends with a control token (``<|im_end|>``, ``<end_of_turn>``...).

    Some templates end an assistant turn with nothing: GLM-4-MoE's next role token
    (``<|user|>``) ends it, so the rendered turn alone teaches the model no stop.
    """
    text = turn.rstrip()
    return any(text.endswith(m) for m in _markers(tokenizer))


def _anchors(messages: Messages, i: int, prompt: str, upto: str) -> tuple[int, int]:
    """Where the last message before turn ``i`` ends, in the prompt and in the turn's rendering.

    Its content is searched (the same occurrence in both: the turn itself may repeat it);
    (0, 0) when no earlier content shows in both.
    """
    for m in reversed(messages[:i]):
        content = m.get("content")
        if not isinstance(content, str) or not content.strip():
            continue
        count = prompt.count(content)
        if not count:
            continue
        at_prompt, at_upto = prompt.rfind(content), -1
        for _ in range(count):
            at_upto = upto.find(content, at_upto + 1)
            if at_upto < 0:
                break
        if at_upto >= 0:
            return at_prompt + len(content), at_upto + len(content)
    return 0, 0


def turn_example(messages: Messages, i: int, tokenizer: Any, tools: list | None) -> Rendered:
    """The example that trains assistant turn ``i`` as the model generates it.

    The prompt is the conversation before the turn with the generation prompt, as at inference.
    The turn is what the template renders for it as the last message. Where that rendering does
    not simply continue the prompt (history rewritten: Mistral moves tools and the system prompt
    into the last user turn; or a pre-fill: DeepSeek's ``<think>\n``), the two are aligned
    after the last earlier message, and the turn starts where they part: after what they share
    (``[/INST]``, ``<|im_start|>assistant\n<think>``), and after the pre-fill itself where
    the rendered turn has it later (a no-think template's empty think block).
    """
    prompt = apply_original(tokenizer, messages[:i], True, tools) if i else ""
    upto = apply_original(tokenizer, messages[: i + 1], False, tools)
    if upto.startswith(prompt):
        cut = len(prompt)
    else:
        at_prompt, at_upto = _anchors(messages, i, prompt, upto)
        k = _token_boundary(tokenizer, prompt[at_prompt:], upto[at_upto:])
        if not prompt[at_prompt : at_prompt + k].strip():
            # Not even the assistant header is shared: nothing to align the turn on.
            raise TemplateMismatch(
                f"the tokenizer's chat template renders the generation prompt as "
                f"{prompt[at_prompt:][-40:]!r} but starts the assistant turn with "
                f"{upto[at_upto:][:40]!r}, so the turn cannot be aligned with what the model "
                "generates after the prompt: use a named template"
            )
        prefill, rest = prompt[at_prompt + k :], upto[at_upto + k :]
        found = rest.find(prefill) if prefill.strip() else -1
        cut = at_upto + k + (found + len(prefill) if found >= 0 else 0)
    text = prompt + upto[cut:]
    shift = len(prompt) - cut  # position j >= cut of ``upto`` is j + shift of ``text``
    if tokenizer.eos_token and not ends_with_marker(tokenizer, text[len(prompt) :]):
        text += tokenizer.eos_token  # the stop the model must learn (see ends_with_marker)
    spans: list[Span] = [(len(prompt), len(text))]
    if has_generation_blocks(tokenizer):
        _, blocks = generation_spans(tokenizer, messages[: i + 1], False, tools)
        clipped = [(max(s, cut) + shift, e + shift) for s, e in blocks if e > cut]
        spans = [(s, e) for s, e in clipped if e > s] or spans
    reasoning: tuple[Span, ...] = ()
    message = messages[i]
    if message.get("reasoning_content"):
        plain = {k: v for k, v in message.items() if k != "reasoning_content"}
        without = apply_original(tokenizer, [*messages[:i], plain], False, tools)
        s, e = inserted(upto, without, cut)
        s, e = max(s, cut) + shift, min(e + shift, len(text))
        if e > s:
            reasoning = ((s, e),)
    return Rendered(text, tuple(spans), reasoning)


def _whole(messages: Messages, tokenizer: Any, tools: list | None, strict: bool) -> Rendered:
    rendered = render_original(messages, tokenizer, False, tools, strict=strict)
    if has_generation_blocks(tokenizer):
        text, blocks = generation_spans(tokenizer, messages, False, tools)
        if text == rendered.text and blocks:
            return Rendered(text, tuple(blocks), rendered.reasoning)
    if not strict:  # the differences were not checked: without blocks there are no spans
        render_original(messages, tokenizer, False, tools, strict=True)
    return rendered


def conversation_examples(
    name: ChatTemplateName,
    messages: Messages,
    tokenizer: Any,
    tools: list | None = None,
    rule: HistoryRule = HistoryRule.AUTO,
) -> tuple[list[Rendered], bool]:
    """The training examples of one conversation under ``rule``.

    Args:
        name: The chat template; named templates write prefix-preserving text, so they always
            give the whole conversation.
        messages: The conversation.
        tokenizer: The tokenizer (keep-original: its own template renders).
        tools: The row's function schemas.
        rule: ``data_conf.history_rule``.

    Returns:
        The examples, and whether the conversation was trained whole (one example, every
        assistant turn) rather than turn by turn.

    Raises:
        TemplateMismatch: ``whole`` and a template that rewrites this row's history, or a
            template whose generation prompt shares not even the assistant header with the
            turns it renders.
    """
    if name != ChatTemplateName.KEEP_ORIGINAL:
        return [render(name, messages, tokenizer, tools=tools)], True
    if rule in (HistoryRule.AUTO, HistoryRule.WHOLE):
        # With {% generation %} blocks the spans are given, so `whole` needs no stable prefixes.
        strict = not (rule == HistoryRule.WHOLE and has_generation_blocks(tokenizer))
        try:
            whole = _whole(messages, tokenizer, tools, strict)
        except TemplateMismatch:
            if rule == HistoryRule.WHOLE:
                raise
        else:
            # A turn without an end marker is trained on its own, with EOS after it.
            unended = any(not ends_with_marker(tokenizer, whole.text[s:e]) for s, e in whole.spans)
            if rule == HistoryRule.WHOLE or not unended:
                return [whole], True
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if rule == HistoryRule.LAST_TURN:
        turns = turns[-1:]
    if not turns:  # nothing to train: one example with no span (counted as nothing trained)
        return [render_original(messages, tokenizer, False, tools, strict=False)], True
    return [turn_example(messages, i, tokenizer, tools) for i in turns], False


def _missing_in(text: str, message: dict[str, Any], where: str) -> list[str]:
    """What of an assistant turn's content, reasoning and tool calls ``text`` does not show."""
    missing = []
    content = message.get("content")
    if isinstance(content, str) and content.strip() and content.strip() not in text:
        missing.append(f"{where}.content")
    reasoning = (message.get("reasoning_content") or "").strip()
    if reasoning and reasoning not in text:
        missing.append(f"{where}.reasoning_content")
    for call in tool_calls(message):
        keys = [str(k) for k in call["arguments"]]
        if call["name"] not in text or any(k not in text for k in keys):
            missing.append(f"{where}.tool_calls ({call['name']})")
    return missing


def unrendered(
    messages: Messages, tools: list | None, examples: list[Rendered], whole: bool
) -> list[str]:
    """What the row carries that its examples' text leaves out (empty: everything shows).

    Each trained turn is checked against its example's trained text, so reasoning a template
    drops from history but shows in the turn being generated is not reported; ``tools`` must
    show in every example.
    """
    turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if whole:
        checks = [(examples[0], turns)]
    else:
        trained_turns = turns[len(turns) - len(examples) :]
        checks = [(ex, [i]) for ex, i in zip(examples, trained_turns, strict=True)]
    missing: list[str] = []
    for example, indices in checks:
        trained = "\0".join(example.text[s:e] for s, e in example.spans)
        for i in indices:
            missing += _missing_in(trained, messages[i], f"messages[{i}]")
    if any(missing_tools(ex.text, tools) for ex in examples):
        missing.append("`tools`")
    return missing


def missing_tools(text: str, tools: list | None) -> list[str]:
    """The names of the function schemas in ``tools`` that a rendered ``text`` does not show."""
    return [str(tool_name(t)) for t in tools or [] if str(tool_name(t)) not in text]


def refuse_unrendered(missing: list[str]) -> None:
    """Raise the located error for content the tokenizer's template drops."""
    named = ", ".join(t.value for t in TOOL_TEMPLATES if t != ChatTemplateName.KEEP_ORIGINAL)
    raise UnsupportedRow(
        f"the tokenizer's chat template (keep-original) leaves out {', '.join(missing)} of "
        f"this row, so training would silently drop them. Use a template that renders tools, "
        f"tool calls and reasoning ({named}), a tokenizer whose own template renders them, "
        "or set data_conf.allow_unrendered_content: true to train without them"
    )
