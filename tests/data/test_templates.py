"""Exact renderings and assistant spans of every chat template; the stored Jinja matches them."""

from __future__ import annotations

import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.templates import SPECS, TemplateMismatch, render
from finetuning.errors import UserError

SINGLE = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}]
SYSTEM = [{"role": "system", "content": "S"}, *SINGLE]
MULTI = [*SYSTEM, {"role": "user", "content": "U2"}, {"role": "assistant", "content": " A2 "}]

EXPECTED = {
    (T.MISTRAL_WITH_SYSTEM, "single"): "[INST] U1 [/INST]A1</s> ",
    (T.MISTRAL_WITH_SYSTEM, "system"): "<<SYS>>\nS\n<</SYS>>\n[INST] U1 [/INST]A1</s> ",
    (
        T.MISTRAL_WITH_SYSTEM,
        "multi",
    ): "<<SYS>>\nS\n<</SYS>>\n[INST] U1 [/INST]A1</s> [INST] U2 [/INST] A2 </s> ",
    (T.CHAT_ML, "single"): "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n",
    (T.CHAT_ML, "system"): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
    "<|im_start|>assistant\nA1<|im_end|>\n",
    (T.CHAT_ML, "multi"): "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
    "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
    "<|im_start|>assistant\n A2 <|im_end|>\n",
    (T.PORO, "single"): "<|user|>\nU1</s><|assistant|>\nA1</s>",
    (T.PORO, "system"): "<|system|>\nS</s><|user|>\nU1</s><|assistant|>\nA1</s>",
    (T.PORO, "multi"): "<|system|>\nS</s><|user|>\nU1</s><|assistant|>\nA1</s><|user|>\nU2</s>"
    "<|assistant|>\n A2 </s>",
    (T.SIMPLIFIED_LLAMA31, "single"): "<s><|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>",
    (T.SIMPLIFIED_LLAMA31, "system"): "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>",
    (T.SIMPLIFIED_LLAMA31, "multi"): "<s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU1<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nU2<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>",
    (T.KEEP_ORIGINAL, "single"): "<s><|user|>\nU1</s>\n<|assistant|>\nA1</s>\n",
    (T.KEEP_ORIGINAL, "system"): "<s><|system|>\nS</s>\n<|user|>\nU1</s>\n<|assistant|>\nA1</s>\n",
    (T.KEEP_ORIGINAL, "multi"): "<s><|system|>\nS</s>\n<|user|>\nU1</s>\n<|assistant|>\nA1</s>\n"
    "<|user|>\nU2</s>\n<|assistant|>\n A2 </s>\n",
}

SPANS = {
    T.MISTRAL_WITH_SYSTEM: ["[/INST]A1</s>", "[/INST] A2 </s>"],
    T.CHAT_ML: ["<|im_start|>assistant\nA1<|im_end|>", "<|im_start|>assistant\n A2 <|im_end|>"],
    T.PORO: ["<|assistant|>\nA1</s>", "<|assistant|>\n A2 </s>"],
    T.SIMPLIFIED_LLAMA31: [
        "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>",
        "<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>",
    ],
    T.KEEP_ORIGINAL: ["A1</s>\n", " A2 </s>\n"],
}

CONVERSATIONS = {"single": SINGLE, "system": SYSTEM, "multi": MULTI}


@pytest.mark.parametrize(("key", "expected"), EXPECTED.items(), ids=lambda k: str(k))
def test_exact_rendering(key, expected, tiny_tokenizer):
    template, conversation = key
    assert render(template, CONVERSATIONS[conversation], tiny_tokenizer).text == expected


@pytest.mark.parametrize("template", list(T))
def test_assistant_spans(template, tiny_tokenizer):
    rendered = render(template, MULTI, tiny_tokenizer)
    assert [rendered.text[s:e] for s, e in rendered.spans] == SPANS[template]


@pytest.mark.parametrize(
    ("template", "prompt_suffix"),
    [
        (T.CHAT_ML, "<|im_start|>assistant\n"),
        (T.PORO, "<|assistant|>\n"),
        (T.SIMPLIFIED_LLAMA31, "<|start_header_id|>assistant<|end_header_id|>\n\n"),
        (T.KEEP_ORIGINAL, "<|assistant|>\n"),
    ],
)
def test_generation_prompt(template, prompt_suffix, tiny_tokenizer):
    text = render(template, SYSTEM[:2], tiny_tokenizer, add_generation_prompt=True).text
    assert text.endswith(prompt_suffix)


def test_mistral_drops_other_roles(tiny_tokenizer):
    # (Tool results are refused instead: tests/data/test_tools.py.)
    messages = [{"role": "observation", "content": "T"}, *SINGLE]
    assert (
        render(T.MISTRAL_WITH_SYSTEM, messages, tiny_tokenizer).text == "[INST] U1 [/INST]A1</s> "
    )


@pytest.mark.parametrize("template", [t for t in T if t != T.KEEP_ORIGINAL])
@pytest.mark.parametrize("conversation", ["single", "system", "multi"])
def test_stored_jinja_renders_the_same(template, conversation, tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = SPECS[template].jinja
    messages = CONVERSATIONS[conversation]
    ours = render(template, messages, tiny_tokenizer).text
    assert tok.apply_chat_template(messages, tokenize=False) == ours
    if template != T.MISTRAL_WITH_SYSTEM:
        prompt = render(template, messages[:-1], tiny_tokenizer, add_generation_prompt=True).text
        assert (
            tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            == prompt
        )


def test_keep_original_without_template_is_a_clear_error(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(UserError, match="keep-original needs a tokenizer with a chat template"):
        render(T.KEEP_ORIGINAL, SINGLE, tok)


def test_keep_original_template_that_rewrites_history_is_detected(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    # Renders only the last message: earlier prefixes are not prefixes of the full text.
    tok.chat_template = "{{ messages[-1]['content'] }}"
    with pytest.raises(TemplateMismatch):
        render(T.KEEP_ORIGINAL, MULTI, tok)
