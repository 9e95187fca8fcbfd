"""Dataset formats: each is detected, converted to our row shapes and located when it is wrong."""

from __future__ import annotations

import json
import typing

import pytest

from finetuning.config.data import DatasetDefinition, DatasetFormat
from finetuning.data import schemas
from finetuning.data.rows import read_dataset, read_rows
from finetuning.errors import UserError

USER, ANSWER = {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}
WRONG = {"role": "assistant", "content": "5"}

SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Weather in Oslo?"},
        {"from": "function_call", "value": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"from": "observation", "value": "rain"},
        {"from": "gpt", "value": "It rains."},
    ],
    "tools": '[{"name": "weather", "parameters": {"type": "object"}}]',
}
ALPACA = {
    "instruction": "Add the numbers.",
    "input": "2 and 2",
    "output": "4",
    "system": "You add.",
    "history": [["Hi", "Hello!"]],
}
ULTRAFEEDBACK = {  # HuggingFaceH4/ultrafeedback_binarized: a string prompt, whole conversations
    "prompt": "2+2?",
    "prompt_id": "abc",
    "chosen": [USER, ANSWER],
    "rejected": [USER, WRONG],
    "score_chosen": 9.0,
}

#: (method, row, format detected, what the row becomes)
CASES = [
    ("sft", {"messages": [USER, ANSWER]}, "messages", {"messages": [USER, ANSWER]}),
    (
        "sft",
        SHAREGPT,
        "sharegpt",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "type": "function",
                            "function": {"name": "weather", "arguments": {"city": "Oslo"}},
                        }
                    ],
                },
                {"role": "tool", "content": "rain"},
                {"role": "assistant", "content": "It rains."},
            ],
            "tools": [{"name": "weather", "parameters": {"type": "object"}}],
        },
    ),
    (
        "sft",
        ALPACA,
        "alpaca",
        {
            "messages": [
                {"role": "system", "content": "You add."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Add the numbers.\n2 and 2"},
                {"role": "assistant", "content": "4"},
            ]
        },
    ),
    (
        "sft",
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        "alpaca",
        {
            "messages": [
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "hi"},
            ]
        },
    ),
    (
        "sft",
        {"prompt": "2+2?", "completion": "4"},
        "prompt-completion",
        {"messages": [USER, ANSWER]},
    ),
    (
        "sft",
        {"prompt": [USER], "completion": [ANSWER]},
        "prompt-completion",
        {"messages": [USER, ANSWER]},
    ),
    ("pretrain", {"text": "A document."}, "text", {"text": "A document."}),
    (
        "dpo",
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        "prompt-chosen-rejected",
        {"prompt_messages": [USER], "chosen_messages": [ANSWER], "rejected_messages": [WRONG]},
    ),
    (
        "dpo",
        {"prompt": [USER], "chosen": [ANSWER], "rejected": [WRONG]},
        "prompt-chosen-rejected",
        {"prompt_messages": [USER], "chosen_messages": [ANSWER], "rejected_messages": [WRONG]},
    ),
    (
        "dpo",
        ULTRAFEEDBACK,
        "chosen-rejected",
        {
            "prompt_messages": [USER],
            "chosen_messages": [ANSWER],
            "rejected_messages": [WRONG],
            "prompt_id": "abc",
            "score_chosen": 9.0,
        },
    ),
    (
        "dpo",
        {"chosen": [USER, ANSWER], "rejected": [USER, WRONG]},
        "chosen-rejected",
        {"prompt_messages": [USER], "chosen_messages": [ANSWER], "rejected_messages": [WRONG]},
    ),
    (
        "kto",
        {"prompt": "2+2?", "completion": "5", "label": False},
        "prompt-completion-label",
        {"prompt_messages": [USER], "completion_messages": [WRONG], "label": False},
    ),
    (
        "kto",
        {"prompt": [USER], "completion": [ANSWER], "label": True},
        "prompt-completion-label",
        {"prompt_messages": [USER], "completion_messages": [ANSWER], "label": True},
    ),
    (
        "grpo",
        {"prompt": "2+2?", "answer": "4"},
        "prompt",
        {"prompt_messages": [USER], "answer": "4"},
    ),
    (
        "grpo",
        {"prompt": [USER], "answer": "4"},
        "prompt",
        {"prompt_messages": [USER], "answer": "4"},
    ),
]


@pytest.mark.parametrize(("method", "row", "name", "expected"), CASES, ids=lambda v: str(v)[:30])
def test_each_format_is_detected_and_converted(method, row, name, expected):
    fmt = schemas.detect(row, method)
    assert fmt is not None and fmt.name == name
    assert schemas.converted(dict(row), fmt) == expected


@pytest.mark.parametrize(("method", "row", "name", "expected"), CASES, ids=lambda v: str(v)[:30])
def test_each_format_reads_from_a_file_with_only_a_path(method, row, name, expected, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    read = read_dataset(DatasetDefinition(path=str(path)), method, "k")
    assert read.format == name and read.detected
    got = [{k: v for k, v in r.items() if not k.startswith("_")} for r in read.rows]
    assert got == [expected]


def test_kto_takes_trl_preference_rows_and_unpairs_them(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "chosen": "4", "rejected": "5"}) + "\n")
    read = read_dataset(DatasetDefinition(path=str(path)), "kto", "k")
    assert read.format == "prompt-chosen-rejected"
    assert [(r["completion_messages"], r["label"]) for r in read.rows] == [
        ([ANSWER], True),
        ([WRONG], False),
    ]


def test_the_config_literal_lists_every_format():
    assert set(typing.get_args(DatasetFormat)) == set(schemas.FORMATS)


def test_every_method_has_its_own_format_first_for_error_fallback():
    for method, own in [("sft", "messages"), ("dpo", "preference"), ("kto", "kto"),
                        ("grpo", "prompt-messages"), ("pretrain", "text")]:  # fmt: skip
        assert schemas.own_format(method).name == own


def test_a_row_fitting_no_format_lists_the_formats_and_their_keys(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    text = info.value.format()
    assert f"{path}:1:" in text
    for name in ("messages (`messages`)", "sharegpt (`conversations`", "alpaca (`instruction`",
                 "prompt-completion (`prompt`, `completion`"):  # fmt: skip
        assert name in text


def test_a_row_in_our_own_shape_is_read_as_it_is(tmp_path):
    """Our own keys win over another format's: the other keys are the row's own columns."""
    path = tmp_path / "rows.jsonl"
    turns = [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]
    path.write_text(json.dumps({"messages": [USER, ANSWER], "conversations": turns}) + "\n")
    read = read_dataset(DatasetDefinition(path=str(path)), "sft", "k")
    assert read.format == "messages" and read.detected
    assert read.rows[0]["messages"] == [USER, ANSWER]


def test_an_ambiguous_row_names_both_formats(tmp_path):
    path = tmp_path / "rows.jsonl"
    turns = [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]
    row = {"instruction": "a", "output": "b", "conversations": turns}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    text = info.value.format()
    assert f"{path}:1:" in text and "fits two formats" in text
    assert "alpaca (" in text and "sharegpt (" in text and "format:" in text
    # format: settles it
    read = read_dataset(DatasetDefinition(path=str(path), format="sharegpt"), "sft", "k")
    assert read.format == "sharegpt" and not read.detected
    assert read.rows[0]["messages"][1] == {"role": "assistant", "content": "y"}


def test_a_superset_of_keys_wins_over_its_subset():
    row = {"prompt": "q", "chosen": [ANSWER], "rejected": [WRONG]}  # a string prompt, lists
    assert schemas.detect(row, "dpo").name == "chosen-rejected"  # TRL extracts it likewise
    row = {"prompt": [USER], "chosen": [ANSWER], "rejected": [WRONG]}
    assert schemas.detect(row, "dpo").name == "prompt-chosen-rejected"


def test_later_rows_that_do_not_fit_the_format_are_located(tmp_path):
    path = tmp_path / "rows.jsonl"
    rows = [ALPACA, {"instruction": "x"}, {"instruction": "y", "output": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    text = info.value.format()
    assert f"{path}:2: missing `output`: a alpaca row has" in text
    assert f"{path}:3: the values do not fit" in text


def test_sharegpt_unknown_role_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    row = {"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(
        UserError, match=r"conversations\[1\]\.from is 'bot'; ShareGPT roles are human"
    ):
        read_rows(path, "sft", "k")


def test_converted_rows_are_checked_like_ours(tmp_path):
    path = tmp_path / "rows.jsonl"  # a conversation with no assistant turn
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "x"}]}) + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    assert "no assistant turn" in info.value.format()
    assert "converted from the sharegpt format" in info.value.format()


def test_identical_chosen_and_rejected_conversations_are_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"chosen": [USER, ANSWER], "rejected": [USER, ANSWER]}) + "\n")
    with pytest.raises(UserError, match="do not diverge"):
        read_rows(path, "dpo", "k")


def test_columns_rename_before_detection(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"content": "A document.", "id": 3}) + "\n")
    dataset = DatasetDefinition(path=str(path), columns={"text": "content"})
    read = read_dataset(dataset, "pretrain", "k")
    assert read.format == "text" and read.rows[0]["text"] == "A document."
    dataset = DatasetDefinition(path=str(path), columns={"text": "body"})
    with pytest.raises(
        UserError, match=r"rows.jsonl:1: has no column `body` \(named in `columns:`\)"
    ):
        read_dataset(dataset, "pretrain", "k")


def test_a_format_the_method_cannot_take_names_the_key(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n")
    with pytest.raises(UserError) as info:
        read_dataset(
            DatasetDefinition(path=str(path), format="alpaca"), "dpo", "d.datasets[0].path"
        )
    text = info.value.format()
    assert text.startswith("d.datasets[0].format: a dpo dataset cannot be in the alpaca format")
    assert "prompt-chosen-rejected (`prompt`, `chosen`, `rejected`" in text


def test_by_name_keys_on_a_plain_file_are_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"messages": [USER, ANSWER]}) + "\n")
    with pytest.raises(UserError, match=r"d\.split: `split` is for Hub datasets"):
        read_dataset(DatasetDefinition(path=str(path), split="test"), "sft", "d.path")


@pytest.mark.parametrize(
    ("method", "names"),
    [
        ("sft", ["messages", "sharegpt", "alpaca", "prompt-completion"]),
        ("dpo", ["preference", "prompt-chosen-rejected", "chosen-rejected"]),
        ("reward", ["preference", "prompt-chosen-rejected", "chosen-rejected"]),
        ("kto", ["preference", "prompt-chosen-rejected", "chosen-rejected", "kto",
                 "prompt-completion-label"]),
        ("grpo", ["prompt-messages", "prompt"]),
        ("pretrain", ["text"]),
    ],
)  # fmt: skip
def test_each_method_takes_its_formats(method, names, tmp_path):
    assert [f.name for f in schemas.formats_for(method)] == names
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"nothing": "here"}) + "\n")
    with pytest.raises(UserError) as info:
        read_rows(path, method, "k")
    assert all(f"{name} (" in info.value.format() for name in names)


def test_a_sft_row_in_a_preference_format_is_not_taken_for_sft():
    assert schemas.detect({"prompt": "q", "chosen": "a", "rejected": "b"}, "sft") is None
    assert schemas.detect({"prompt": "q", "completion": "a", "label": True}, "sft").name == (
        "prompt-completion"
    )  # the label is a column it keeps
