"""Strict readers: every malformed row kind is a user error naming the file and line."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

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


# The separators str.splitlines() knows that json.dumps leaves unescaped (it escapes < 0x20).
@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_line_separators_inside_json_strings_do_not_split_a_row(tmp_path, separator):
    row = {"messages": [{"role": "user", "content": f"a{separator}b"}, GOOD["messages"][1]]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n" + json.dumps(GOOD) + "\n")
    rows = read_rows(path, "sft", "k")
    assert [r["messages"][0]["content"] for r in rows] == [f"a{separator}b", "hi"]
    assert rows[1]["_where"].endswith("d.jsonl:2")


def test_crlf_line_ends_are_read(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(((json.dumps(GOOD) + "\r\n") * 2).encode())
    assert len(read_rows(path, "sft", "k")) == 2


def test_a_folder_is_named_as_a_folder(tmp_path):
    with pytest.raises(UserError) as info:
        read_rows(tmp_path, "sft", "data_conf.training_data.datasets[0].path")
    text = info.value.format()
    assert "data_conf.training_data.datasets[0].path" in text
    assert "is a folder but not one written by save_to_disk" in text and "not found" not in text


def test_a_fifo_is_named_and_never_opened(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    with pytest.raises(UserError, match=r"pipe.jsonl is a named pipe \(FIFO\), not a regular file"):
        read_rows(fifo, "sft", "k")


def test_an_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root can read a chmod 000 file
    with pytest.raises(UserError, match=r"cannot read .*d\.jsonl: permission denied"):
        read_rows(path, "sft", "k")


def test_an_io_error_mid_file_is_a_user_error(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    path.write_text((json.dumps(GOOD) + "\n") * 1000)
    reached = []

    def fails_part_way(self):  # a failing disk: the first block reads, the next one does not
        with open(self, "rb") as f:
            reached.append(len(f.read(4096)))
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", fails_part_way)
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "data_conf.training_data.datasets[0].path")
    assert reached == [4096]
    assert "Input/output error (errno 5)" in info.value.format()
    assert "data_conf.training_data.datasets[0].path" in info.value.format()


def test_a_deeply_nested_row_is_a_located_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(UserError, match=rf"{path}:2: invalid JSON: nested too deeply"):
        read_rows(path, "sft", "k")
    path.write_text("[" * 3000 + "]" * 3000)
    with pytest.raises(UserError, match="invalid JSON array: nested too deeply"):
        read_rows(path, "sft", "k")
