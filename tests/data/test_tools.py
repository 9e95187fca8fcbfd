"""Tool calls, tool results and reasoning: row checks, exact renderings, spans and loss masks."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.encode import IGNORE, EncodeSettings, encode_chunk
from finetuning.data.rows import read_rows
from finetuning.data.templates import SPECS, UnsupportedRow, render
from finetuning.errors import UserError
from finetuning.testing import (
    CHATML_TOOLS_REFERENCE_TEMPLATE,
    TINY_TOOL_CHAT_TEMPLATE,
    synthetic_tool_chats,
)

TOOLS = [{"type": "function", "function": {"name": "f"}}]
CALL = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
CONV = [
    {"role": "system", "content": "S"},
    {"role": "user", "content": "U"},
    {"role": "assistant", "content": "", "reasoning_content": "R", "tool_calls": [CALL]},
    {"role": "tool", "name": "f", "content": "T"},
    {"role": "assistant", "content": "A"},
]
CHATML_TOOLS = (
    "<|im_start|>system\nS\n\n# Tools\n\nYou may call one or more functions to assist with the "
    "user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n"
    '<tools>\n{"type": "function", "function": {"name": "f"}}\n</tools>\n\nFor each function '
    "call, return a json object with function name and arguments within <tool_call></tool_call>"
    ' XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
)
GOLDEN = {
    T.CHAT_ML: CHATML_TOOLS + "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n<think>\nR\n"
    '</think>\n\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nT\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nA<|im_end|>\n",
    T.SIMPLIFIED_LLAMA31: "<s><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython"
    "\n\nYou have access to the following functions. To call a function, please respond with "
    'JSON for a function call. Respond in the format {"name": function name, "parameters": '
    "dictionary of argument name and its value}. Do not use variables.\n\n"
    '{\n    "type": "function",\n    "function": {\n        "name": "f"\n    }\n}\n\n'
    "S<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nR\n</think>\n\n"
    '{"name": "f", "parameters": {"x": 1}}<|eot_id|><|start_header_id|>ipython'
    "<|end_header_id|>\n\nT<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>",
    T.KEEP_ORIGINAL: '<s><|system|>\nS\ntools:\n{"type": "function", "function": {"name": "f"}}'
    '</s>\n<|user|>\nU</s>\n<|assistant|>\n<think>R</think>\n<call>f {"x": 1}</call></s>\n'
    "<|tool|>\nT</s>\n<|assistant|>\nA</s>\n",
}
SPANS = {
    T.CHAT_ML: [
        '<|im_start|>assistant\n<think>\nR\n</think>\n\n<tool_call>\n{"name": "f", "arguments": '
        '{"x": 1}}\n</tool_call><|im_end|>',
        "<|im_start|>assistant\nA<|im_end|>",
    ],
    T.SIMPLIFIED_LLAMA31: [
        "<|start_header_id|>assistant<|end_header_id|>\n\n<think>\nR\n</think>\n\n"
        '{"name": "f", "parameters": {"x": 1}}<|eot_id|>',
        "<|start_header_id|>assistant<|end_header_id|>\n\nA<|eot_id|>",
    ],
    T.KEEP_ORIGINAL: ['<think>R</think>\n<call>f {"x": 1}</call></s>\n', "A</s>\n"],
}
REASONING = {
    T.CHAT_ML: "<think>\nR\n</think>\n\n",
    T.SIMPLIFIED_LLAMA31: "<think>\nR\n</think>\n\n",
    T.KEEP_ORIGINAL: "<think>R</think>\n",
}
TOOL_TEMPLATES = list(GOLDEN)


@pytest.fixture(scope="module")
def tokenizer(template_tokenizer):
    """Every named template's tokens, and a tool-aware template for keep-original."""
    tok = copy.deepcopy(template_tokenizer)
    tok.chat_template = TINY_TOOL_CHAT_TEMPLATE
    return tok


# --- rows -----------------------------------------------------------------------------------


def _row(messages, tools=TOOLS):
    return {"messages": messages, **({"tools": tools} if tools is not None else {})}


def _read(tmp_path, row):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(_row(CONV)) + "\n" + json.dumps(row) + "\n")
    return path, read_rows(path, "sft", "k")


def test_a_tool_row_is_accepted_with_absent_content_and_string_arguments(tmp_path):
    call = {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    messages = [CONV[1], {"role": "assistant", "tool_calls": [call]}, *CONV[3:]]
    _, rows = _read(tmp_path, _row(messages))
    assert rows[1]["messages"][1]["tool_calls"] == [call]
    assert "_warnings" not in rows[1]


def _with(index, **changes):
    messages = copy.deepcopy(CONV)
    messages[index].update(changes)
    return [m for m in messages if m.get("role") != "drop"]


BAD = {
    "tool result without a call": (
        [CONV[1], {"role": "tool", "content": "T"}, CONV[4]],
        "messages[1] is a tool result but does not follow an assistant message with `tool_calls`",
    ),
    "tool after a plain answer": (
        [CONV[1], CONV[4], {"role": "tool", "content": "T"}, CONV[4]],
        "messages[2] is a tool result",
    ),
    "arguments not JSON": (
        _with(2, tool_calls=[{"function": {"name": "f", "arguments": "{x: 1"}}]),
        "messages[2].tool_calls[0].function.arguments is not valid JSON",
    ),
    "arguments not an object": (
        _with(2, tool_calls=[{"function": {"name": "f", "arguments": "[1]"}}]),
        "messages[2].tool_calls[0].function.arguments must be a JSON object, got list",
    ),
    "no function name": (
        _with(2, tool_calls=[{"function": {"arguments": {}}}]),
        "messages[2].tool_calls[0].function.name must be a non-empty string",
    ),
    "calls on a user turn": (
        _with(1, tool_calls=[CALL]),
        "messages[1]: only assistant messages carry `tool_calls`",
    ),
    "reasoning not a string": (
        _with(2, reasoning_content=["R"]),
        "messages[2].reasoning_content must be a string, got list",
    ),
    "no content and no calls": (
        [CONV[1], {"role": "assistant", "reasoning_content": "R"}],
        "messages[1] has no `content`",
    ),
    "tool_call_id not a string": (
        _with(3, tool_call_id=7),
        "messages[3].tool_call_id must be a string, got int",
    ),
}


@pytest.mark.parametrize("kind", BAD)
def test_malformed_tool_row_names_file_line_and_message(kind, tmp_path):
    messages, expected = BAD[kind]
    with pytest.raises(UserError) as info:
        _read(tmp_path, _row(messages))
    assert f"{tmp_path / 'd.jsonl'}:2: {expected}" in info.value.format()


def test_malformed_tools_list(tmp_path):
    with pytest.raises(UserError, match=r"d.jsonl:2: tools\[0\] must be a function schema"):
        _read(tmp_path, _row(CONV, tools=[{"type": "function"}]))


def test_unknown_function_name_is_a_warning_not_an_error(tmp_path):
    call = {"type": "function", "function": {"name": "g", "arguments": {}}}
    _, rows = _read(tmp_path, _row(_with(2, tool_calls=[call])))
    assert rows[1]["_warnings"] == ["messages[2].tool_calls[0] calls 'g', which is not in `tools`"]
    _, rows = _read(tmp_path, _row(_with(2, tool_calls=[call]), tools=None))
    assert "_warnings" not in rows[1]  # without `tools` every name is allowed


# --- rendering ------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_exact_tool_rendering_and_spans(template, tokenizer):
    rendered = render(template, CONV, tokenizer, tools=TOOLS)
    assert rendered.text == GOLDEN[template]
    assert [rendered.text[s:e] for s, e in rendered.spans] == SPANS[template]
    assert [rendered.text[s:e] for s, e in rendered.reasoning] == [REASONING[template]]


def test_chat_ml_content_with_parallel_calls_and_results(tokenizer):
    second = {"type": "function", "function": {"name": "f", "arguments": {"x": 2}}}
    messages = [
        CONV[1],
        {"role": "assistant", "content": "C", "tool_calls": [CALL, second]},
        {"role": "tool", "content": "T1"},
        {"role": "tool", "content": "T2"},
        CONV[4],
    ]
    text = render(T.CHAT_ML, messages, tokenizer, tools=TOOLS).text
    assert text.endswith(
        '<|im_start|>assistant\nC\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n'
        '</tool_call>\n<tool_call>\n{"name": "f", "arguments": {"x": 2}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nT1\n</tool_response>\n<tool_response>\nT2\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n"
    )


def _reference_conversations():
    second = {"type": "function", "function": {"name": "f", "arguments": {"y": "é"}}}
    no_reasoning = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in CONV]
    yield no_reasoning
    yield [
        *no_reasoning[:2],
        {"role": "assistant", "content": "let me look.", "tool_calls": [CALL, second]},
        {"role": "tool", "content": "T1"},
        {"role": "tool", "content": "T2"},
        no_reasoning[4],
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    for row in synthetic_tool_chats(3):
        messages = [
            {k: v for k, v in m.items() if k != "reasoning_content"} for m in row["messages"]
        ]
        # The reference (Qwen2.5) JSON-encodes string arguments a second time; ours are objects.
        for m in messages:
            for call in m.get("tool_calls", []):
                call["function"]["arguments"] = {"fruit": "x"}
        yield [{"role": "system", "content": "be brief."}, *messages]


def test_chat_ml_equals_the_reference_jinja_template(tokenizer):
    reference = copy.deepcopy(tokenizer)
    reference.chat_template = CHATML_TOOLS_REFERENCE_TEMPLATE
    tools = [*TOOLS, {"type": "function", "function": {"name": "g", "parameters": {"a": [1]}}}]
    for messages in _reference_conversations():
        ours = render(T.CHAT_ML, messages, tokenizer, tools=tools).text
        assert ours == reference.apply_chat_template(messages, tools=tools, tokenize=False)
        prompt = render(T.CHAT_ML, messages[:2], tokenizer, True, tools=tools).text
        assert prompt == reference.apply_chat_template(
            messages[:2], tools=tools, tokenize=False, add_generation_prompt=True
        )


@pytest.mark.parametrize("template", [T.CHAT_ML, T.SIMPLIFIED_LLAMA31])
def test_stored_jinja_renders_tool_conversations_the_same(template, tokenizer):
    stored = copy.deepcopy(tokenizer)
    stored.chat_template = SPECS[template].jinja
    string_args = copy.deepcopy(CONV)
    string_args[2]["tool_calls"][0]["function"]["arguments"] = '{"x":1}'
    for messages in [CONV, string_args, *_reference_conversations()]:
        for tools in (TOOLS, None):
            ours = render(template, messages, tokenizer, tools=tools).text
            assert stored.apply_chat_template(messages, tools=tools, tokenize=False) == ours
        prompt = render(template, messages[:2], tokenizer, True, tools=TOOLS).text
        assert (
            stored.apply_chat_template(
                messages[:2], tools=TOOLS, tokenize=False, add_generation_prompt=True
            )
            == prompt
        )


@pytest.mark.parametrize("template", [T.MISTRAL_WITH_SYSTEM, T.PORO])
@pytest.mark.parametrize(
    "case",
    ["tools", "call", "reasoning"],
)
def test_templates_without_tool_support_refuse_tool_rows(template, case, tokenizer):
    messages, tools = [*copy.deepcopy(CONV[:2]), {"role": "assistant", "content": "A"}], None
    if case == "tools":
        tools = TOOLS
    elif case == "call":
        messages = CONV
    else:
        messages[-1]["reasoning_content"] = "R"
    with pytest.raises(UnsupportedRow, match="use a template that supports them \\(chat-ml"):
        render(template, messages, tokenizer, tools=tools)


def test_encoding_a_tool_row_with_mistral_is_a_user_error_naming_the_row(tokenizer):
    row = {"messages": CONV, "tools": TOOLS, "_where": "d.jsonl:7"}
    settings = EncodeSettings(T.MISTRAL_WITH_SYSTEM, 1000, completions_only=True)
    with pytest.raises(UserError, match=r"d.jsonl:7: data_conf.chat_template_name: mistral"):
        encode_chunk([row], tokenizer, settings)


# --- masks ----------------------------------------------------------------------------------


def _trained_runs(tokenizer, ids, labels) -> list[str]:
    trained = labels != IGNORE
    assert (labels[trained] == ids[trained]).all()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(int), [0]])))
    return [
        tokenizer.decode(ids[a:b].tolist()) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def _encode(tokenizer, template, messages=CONV, **options):
    settings = EncodeSettings(template, 2000, completions_only=True, **options)
    store = encode_chunk([{"messages": messages, "tools": TOOLS}], tokenizer, settings)
    return store.row(0)


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_trained_tokens_are_calls_answers_and_end_markers(template, tokenizer):
    ids, labels = _encode(tokenizer, template)
    runs = _trained_runs(tokenizer, ids, labels)
    # Tokens straddling a span's start are trained whole: compare without leading whitespace.
    assert [r.lstrip() for r in runs] == [s.lstrip() for s in SPANS[template]]
    trained_text = "".join(runs)
    assert "T" not in trained_text.replace("<tool_call>", "").replace("</tool_call>", "")
    assert "U" not in trained_text and "S" not in trained_text.replace("</s>", "")


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_reasoning_is_masked_with_train_on_reasoning_false(template, tokenizer):
    ids, labels = _encode(tokenizer, template, train_on_reasoning=False)
    runs = _trained_runs(tokenizer, ids, labels)
    reasoning = REASONING[template]
    expected = [SPANS[template][0].replace(reasoning, "\x00"), SPANS[template][1]]
    expected = [p.strip() for s in expected for p in s.split("\x00") if p.strip()]
    assert [r.strip() for r in runs] == expected
    assert "R" not in "".join(runs)


@pytest.mark.parametrize("template", TOOL_TEMPLATES)
def test_drop_past_reasoning_keeps_only_the_last_turns_reasoning(template, tokenizer):
    messages = copy.deepcopy(CONV)
    messages[4]["reasoning_content"] = "Q"
    kept, _ = _encode(tokenizer, template, messages)
    dropped, labels = _encode(tokenizer, template, messages, drop_past_reasoning=True)
    assert tokenizer.decode(kept.tolist()).count("<think>") == 2
    text = tokenizer.decode(dropped.tolist())
    assert text.count("<think>") == 1 and "Q" in text
    assert "Q" in "".join(_trained_runs(tokenizer, dropped, labels))


# --- preflight ------------------------------------------------------------------------------


def test_preflight_counts_tool_rows_and_shows_calls_and_reasoning(tiny_llama, tmp_path):
    from finetuning.config.loading import load_config_dict
    from finetuning.data.preflight import preflight
    from finetuning.testing import write_jsonl
    from tests.helpers import minimal_sft

    rows = synthetic_tool_chats(6)
    rows[4]["messages"][1]["tool_calls"][0]["function"]["name"] = "get_colour"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    raw = minimal_sft(tiny_llama, data)
    raw["sft_args"].update(
        max_seq_length=1024, train_on_completions_only=True, train_on_reasoning=False
    )
    report = preflight(load_config_dict(raw, "sft"))
    text = report.format()
    assert "rows with tools, tool calls, tool results or reasoning: 6" in text
    assert (
        f"WARNING: 1 rows call a function that is not in their `tools` (first: {data}:5: "
        "messages[1].tool_calls[0] calls 'get_colour', which is not in `tools`)"
    ) in text
    assert "train_on_completions_only is false" not in text
    shown = report.show_example(1)  # a row with reasoning
    assert "⟦<|im_start|>assistant\n⟧<think>\nthe user asks about the" in shown  # not trained
    assert '⟦<tool_call>\n{"name": "get_color", "arguments": {"fruit": ' in shown
    assert "</tool_call><|im_end|>⟧" in shown
    between = shown.split("</tool_call><|im_end|>⟧", 1)[1].split("⟦", 1)[0]
    assert "<|im_start|>user\n<tool_response>" in between  # the tool result is not trained
    raw["sft_args"]["train_on_completions_only"] = False
    text = preflight(load_config_dict(raw, "sft")).format()
    assert "train_on_completions_only is false, so tool results" in text


def test_preference_rows_render_their_tools(tokenizer):
    from finetuning.data.preference import encode_preference_chunk

    row = {
        "tools": TOOLS,
        "prompt_messages": CONV[:4],
        "chosen_messages": [{"role": "assistant", "content": "A"}],
        "rejected_messages": [{"role": "assistant", "tool_calls": [CALL]}],
    }
    store = encode_preference_chunk([row], tokenizer, EncodeSettings(T.CHAT_ML, 2000))
    triple = store.triple(0)
    assert "<tools>" in tokenizer.decode(triple["prompt_ids"])
    assert "<tool_response>\nT\n</tool_response>" in tokenizer.decode(triple["prompt_ids"])
    assert tokenizer.decode(triple["rejected_ids"]).startswith('<tool_call>\n{"name": "f"')
