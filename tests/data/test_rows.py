"""Strict readers: every malformed row kind is a user error naming the file and line."""

from __future__ import annotations

import json

import pytest

from finetuning.data.rows import read_rows
from finetuning.errors import UserError

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
GOOD_DPO = {
    "prompt_messages": [{"role": "user", "content": "hi"}],
    "chosen_messages": [{"role": "assistant", "content": "good"}],
    "rejected_messages": [{"role": "assistant", "content": "bad"}],
}

BAD_SFT = {
    "invalid json": ('{"messages": [', "invalid JSON"),
    "missing messages": (json.dumps({"text": "x"}), "missing `messages`"),
    "no role": (json.dumps({"messages": [{"content": "x"}]}), "messages[0] has no `role`"),
    "no content": (json.dumps({"messages": [{"role": "user"}]}), "messages[0] has no `content`"),
    "non-string content": (
        json.dumps({"messages": [{"role": "user", "content": 3}]}),
        "messages[0].content must be a string, got int",
    ),
    "empty conversation": (json.dumps({"messages": []}), "empty conversation"),
    "no assistant": (
        json.dumps({"messages": [{"role": "user", "content": "x"}]}),
        "has no assistant turn",
    ),
    "messages as object": (
        json.dumps({"messages": {"role": "user", "content": "x"}}),
        "must be a list of messages",
    ),
    "row not an object": ("[1, 2]", "a row must be a JSON object, got list"),
    "dpo row in sft": (json.dumps(GOOD_DPO), "looks like a dpo row"),
}


@pytest.mark.parametrize("kind", BAD_SFT)
def test_malformed_sft_row(kind, tmp_path):
    line, message = BAD_SFT[kind]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "data_conf.training_data.datasets[0].path")
    text = info.value.format()
    assert message in text
    assert f"{path}:2:" in text


@pytest.mark.parametrize("missing", ["prompt_messages", "chosen_messages", "rejected_messages"])
def test_dpo_row_missing_a_list(missing, tmp_path):
    row = {k: v for k, v in GOOD_DPO.items() if k != missing}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(GOOD_DPO) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(UserError, match=rf"{path}:3: missing `{missing}`"):
        read_rows(path, "dpo", "k")


def test_up_to_twenty_problems_are_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("not json\n" * 30)
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    assert len(info.value.problems) == 20
    assert "showing the first 20" in info.value.format()


def test_missing_file_names_the_config_key(tmp_path):
    with pytest.raises(UserError) as info:
        read_rows(tmp_path / "nope.jsonl", "sft", "data_conf.training_data.datasets[1].path")
    assert info.value.format().startswith(
        "data_conf.training_data.datasets[1].path: data file not found"
    )


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n\n")
    with pytest.raises(UserError, match="data file has no rows"):
        read_rows(path, "sft", "k")


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"messages": "\xff\xfe"}\n')
    with pytest.raises(UserError, match=rf"{path}:2: not valid UTF-8"):
        read_rows(path, "sft", "k")


def test_json_array_file_is_accepted(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([GOOD, GOOD]))
    assert len(read_rows(path, "sft", "k")) == 2


def test_metadata_keys_are_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({**GOOD, "id": "x1", "tags": ["a"], "dataset": "d"}) + "\n")
    (row,) = read_rows(path, "sft", "k")
    assert row["id"] == "x1" and row["tags"] == ["a"] and row["dataset"] == "d"
