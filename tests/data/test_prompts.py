"""GRPO prompt rows: read strictly, rendered with our template and the generation prompt."""

from __future__ import annotations

import json

import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.encode import OK, TOO_LONG, EncodeSettings
from finetuning.data.prompts import encode_prompt_chunk
from finetuning.data.rows import read_rows
from finetuning.data.templates import render
from finetuning.errors import UserError

ROW = {
    "prompt_messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "1+1?"}],
    "answer": 2,
    "extra": {"nested": [1, 2]},
}


@pytest.mark.parametrize("template", list(T))
def test_the_prompt_is_the_rendered_messages_with_the_generation_prompt(
    template, template_tokenizer
):
    tok = template_tokenizer
    store = encode_prompt_chunk([ROW], tok, EncodeSettings(template, 1000))
    ids = store.row(0)[0].tolist()
    text = render(template, ROW["prompt_messages"], tok, add_generation_prompt=True).text
    expected = tok(text, add_special_tokens=False)["input_ids"]
    if not text.startswith(tok.bos_token):  # BOS once: by the template or by us
        expected = [tok.bos_token_id, *expected]
    assert ids == expected
    assert ids.count(tok.bos_token_id) == 1
    assert store.status.tolist() == [OK]


def test_a_prompt_longer_than_the_limit_is_left_out(template_tokenizer):
    store = encode_prompt_chunk([ROW, ROW], template_tokenizer, EncodeSettings(T.CHAT_ML, 5))
    assert store.status.tolist() == [TOO_LONG, TOO_LONG]
    assert len(store.input_ids) == 0


def test_prompt_rows_keep_every_key_for_the_rewards(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    (row,) = read_rows(path, "grpo", "k")
    assert row["answer"] == 2 and row["extra"] == {"nested": [1, 2]}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": ROW["prompt_messages"]},
            "missing `prompt_messages` (this looks like a sft row); a grpo row has",
        ),
        ({"prompt_messages": []}, "`prompt_messages` is an empty conversation"),
        (
            {
                "prompt_messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "ends with an assistant message",
        ),
    ],
)
def test_malformed_prompt_rows_are_located(row, message, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, "grpo", "k")
    assert message in info.value.format() and f"{path}:2:" in info.value.format()


def test_a_grpo_row_given_to_sft_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    with pytest.raises(UserError, match="looks like a grpo row"):
        read_rows(path, "sft", "k")
