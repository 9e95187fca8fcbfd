"""Inference with tools: prompts render as training did; answers become structured tool calls."""

from __future__ import annotations

import copy
import io
import json

import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.templates import SPECS, render
from finetuning.errors import UserError
from finetuning.testing import COLOR_TOOL, synthetic_tool_chats
from finetuning.tools.generate import chat, generate_file, render_prompt
from finetuning.tools.tool_calls import describe_calls, parse_answer, read_tools

CALL = {"type": "function", "function": {"name": "get_color", "arguments": {"fruit": "apple"}}}
OTHER = {"type": "function", "function": {"name": "f", "arguments": {"x": [1, "é"]}}}
MESSAGES = [
    {"role": "assistant", "content": "", "reasoning_content": "look it up.", "tool_calls": [CALL]},
    {"role": "assistant", "content": "two calls:", "tool_calls": [CALL, OTHER]},
    {"role": "assistant", "content": "the apple is red.", "reasoning_content": "easy."},
    {"role": "assistant", "content": "the apple is red."},
]


@pytest.mark.parametrize("template", [T.CHAT_ML, T.SIMPLIFIED_LLAMA31])
@pytest.mark.parametrize("message", MESSAGES)
def test_a_generated_turn_parses_back_to_the_message_it_renders(template, message, tiny_tokenizer):
    rendered = render(template, [{"role": "user", "content": "q"}, message], tiny_tokenizer)
    prompt = render(template, [{"role": "user", "content": "q"}], tiny_tokenizer, True).text
    (start, end), marker = rendered.spans[0], SPECS[template].end_marker
    generated = rendered.text[len(prompt) : end - len(marker)]  # what the model writes
    assert rendered.text[start:end].endswith(marker)
    expected = dict(message)
    if not expected["content"]:
        expected["content"] = ""
    assert parse_answer(generated) == expected


def test_malformed_call_stays_in_the_content():
    parsed = parse_answer("<tool_call>\n{not json}\n</tool_call>")
    assert parsed == {"role": "assistant", "content": "<tool_call>\n{not json}\n</tool_call>"}


def test_calls_are_described_one_per_line():
    text = describe_calls({"tool_calls": [CALL, OTHER]})
    assert text == 'tool call: get_color {"fruit": "apple"}\ntool call: f {"x": [1, "é"]}\n'


def test_read_tools(tmp_path):
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([COLOR_TOOL]))
    assert read_tools(path) == [COLOR_TOOL]
    path.write_text(json.dumps({"tools": [COLOR_TOOL]}))
    assert read_tools(path) == [COLOR_TOOL]
    path.write_text(json.dumps([{"type": "function"}]))
    with pytest.raises(UserError, match=r"--tools: .*tools\[0\] must be a function schema"):
        read_tools(path)
    with pytest.raises(UserError, match="file not found"):
        read_tools(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def chatml_checkpoint(tiny_llama):
    """The tiny model with the chat-ml template stored, as a finetuning checkpoint has it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.chat_template = SPECS[T.CHAT_ML].jinja
    tok.pad_token = tok.eos_token
    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), tok


def test_prompts_with_tools_render_as_training_did(chatml_checkpoint):
    _, tok = chatml_checkpoint
    for row in synthetic_tool_chats(4):
        for cut in (1, 3):  # before the call; after the tool result
            messages = row["messages"][:cut]
            trained = render(T.CHAT_ML, messages, tok, True, tools=row["tools"]).text
            assert render_prompt(tok, messages, row["tools"]) == trained


def test_generate_file_records_tool_calls(chatml_checkpoint, tmp_path):
    model, tok = chatml_checkpoint
    rows = [("a:1", {"id": "x", "messages": [{"role": "user", "content": "what color?"}]})]
    rows.append(("a:2", {"id": "y", **copy.deepcopy(synthetic_tool_chats(1)[0])}))
    out = io.StringIO()
    params = {"max_new_tokens": 4}
    assert generate_file(model, tok, rows, out, params, tools=None) == 2
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert "tool_calls" not in first  # no tools for this row
    assert isinstance(second["tool_calls"], list)  # the row's own tools
    out = io.StringIO()
    generate_file(model, tok, rows[:1], out, params, tools=[COLOR_TOOL])
    assert isinstance(json.loads(out.getvalue())["tool_calls"], list)


def test_chat_with_tools_lists_them_and_checks_tool_results(chatml_checkpoint):
    model, tok = chatml_checkpoint
    stdin = io.StringIO("/tool red\nwhat color is the apple?\n/exit\n")
    stdout = io.StringIO()
    chat(model, tok, stdin, stdout, {"max_new_tokens": 3}, tools=[COLOR_TOOL])
    text = stdout.getvalue()
    assert "tools: get_color; answer a tool call with /tool RESULT" in text
    assert "(no tool call to answer)" in text
