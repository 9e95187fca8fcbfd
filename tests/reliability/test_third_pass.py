"""Issue 25 (reliability, third pass): the items that the bad-input corpus cannot express,
each through the command line where a user meets it (the rest are corpus cases)."""

from __future__ import annotations

import json
import logging

import pytest

from finetuning.cli import main
from finetuning.config.loading import load_config_dict
from finetuning.data.unpaired import balance_lines
from finetuning.testing import (
    synthetic_arithmetic,
    synthetic_chats,
    synthetic_preferences,
    write_jsonl,
)
from finetuning.train.batch import resolve
from finetuning.train.reporting.report import _series, figure
from tests.helpers import minimal_dpo, minimal_grpo, minimal_sft, summary, write_config


@pytest.fixture
def no_generate_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("finetuning.tools.generate.load_for_inference", refuse)


# --- 3: KTO on preference rows whose chosen equals rejected ------------------------------------


def test_kto_drops_and_counts_identical_pairs_as_dpo_does(tmp_path, tiny_llama, capsys):
    rows = synthetic_preferences(8, seed=4)
    for row in rows[:3]:
        row["rejected_messages"] = [dict(m) for m in row["chosen_messages"]]
    config = {**minimal_dpo(tiny_llama, write_jsonl(tmp_path / "p.jsonl", rows)), "method": "kto"}
    config["training_args"] = {"output_dir": str(tmp_path / "out")}
    code = main(["validate", str(write_config(tmp_path / "kto.yaml", config))])
    text = "".join(capsys.readouterr())
    assert code == 0, text
    assert "3 preference rows have identical chosen and rejected completions" in text
    assert "kto examples: 5 desirable, 5 undesirable" in text  # the 3 rows' 6 examples dropped


# --- 9: a KTO weight of 0 (the config refuses it; the balance rule must not divide by it) ------


@pytest.mark.parametrize(("dw", "uw"), [(1.0, 0.0), (0.0, 1.0)])
def test_the_balance_rule_survives_a_zero_weight(dw, uw):
    lines, warnings = balance_lines(10, 4, dw, uw)
    assert "kto examples: 10 desirable, 4 undesirable" in lines[0]
    assert any("must be > 0" in w for w in warnings)


# --- 10: user code that exits or is interrupted at import --------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise KeyboardInterrupt\n", "was interrupted (KeyboardInterrupt)"),
        ("import sys\nsys.exit('bye')\n", "called sys.exit('bye')"),
    ],
)
def test_a_reward_file_that_stops_at_import_is_named(tmp_path, tiny_llama, capsys, body, expected):
    (tmp_path / "script.py").write_text(
        body + "def reward(completions, **kw):\n    return [0.0] * len(completions)\n"
    )
    data = write_jsonl(tmp_path / "sums.jsonl", synthetic_arithmetic(4))
    config = minimal_grpo(tiny_llama, data)
    config["training_args"]["output_dir"] = str(tmp_path / "out")
    config["grpo_args"] = {"rewards": [{"function": "script.py:reward"}]}
    code = main(["validate", str(write_config(tmp_path / "grpo.yaml", config))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "grpo_args.rewards[0].function:" in err and expected in err and "Traceback" not in err


# --- 11: row keys TRL reserves ------------------------------------------------------------------


def test_rows_with_a_reserved_key_are_warned_about(tmp_path, tiny_llama, capsys):
    rows = [{**r, "prompt": "mine"} for r in synthetic_arithmetic(4)]
    config = minimal_grpo(tiny_llama, write_jsonl(tmp_path / "sums.jsonl", rows))
    config["training_args"]["output_dir"] = str(tmp_path / "out")
    code = main(["validate", str(write_config(tmp_path / "grpo.yaml", config))])
    text = "".join(capsys.readouterr())
    assert code == 0, text
    assert "row keys passed to the reward functions: answer\n" in text  # not `prompt`
    assert "rows carry prompt, which TRL reserves" in text


# --- 12: a reward that returns None for every completion ---------------------------------------


def test_the_report_leaves_out_steps_without_a_value():
    history = [
        {"step": 1, "rewards/r/mean": None, "loss": 0.0},
        {"step": 2, "rewards/r/mean": 0.5, "loss": 0.1},
    ]
    assert _series(history, "rewards/r/mean") == ([2], [0.5])
    figure([{"step": 1, "reward": None, "rewards/r/mean": None, "loss": 0.0}])  # no TypeError


@pytest.mark.slow
def test_grpo_with_a_reward_that_never_applies_finishes_with_a_report(tmp_path, tiny_llama, caplog):
    """None is "not applicable" (TRL's rule): unscored completions do not train, the run ends
    with exit 0 and a report, and the Nones are counted in the log."""
    caplog.set_level(logging.INFO)
    (tmp_path / "never.py").write_text(
        "def never(completions, **kw):\n    return [None] * len(completions)\n"
    )
    out = tmp_path / "out"
    config = minimal_grpo(tiny_llama, write_jsonl(tmp_path / "s.jsonl", synthetic_arithmetic(4)))
    config["training_args"].update(output_dir=str(out), max_steps=1, logging_steps=1)
    config["grpo_args"] = {"rewards": [{"function": "never.py:never"}]}
    assert main(["grpo", str(write_config(tmp_path / "grpo.yaml", config))]) == 0
    assert (out / "checkpoint-final").is_dir() and (out / "run_report.html").is_file()
    assert summary(out)["steps"] == 1
    assert "reward never (never.py:never) returned None (not applicable) for 4 of 4" in caplog.text


# --- 13: one message check for training rows and generate input --------------------------------


def test_generate_takes_what_training_takes_and_refuses_what_it_refuses(
    tmp_path, no_generate_model, capsys
):
    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    agent = {"messages": [{"role": "user", "content": "hi"},
                          {"role": "assistant", "tool_calls": [call]},
                          {"role": "tool", "content": "42"}]}  # fmt: skip
    source, out = tmp_path / "in.jsonl", tmp_path / "answers.jsonl"
    source.write_text(json.dumps(agent) + "\n")
    argv = ["generate", "--model", "m", "--input", str(source), "--output", str(out)]
    with pytest.raises(AssertionError, match="the model was loaded"):
        main(argv)  # the row passed the check: a call turn needs no content (docs/data.md)
    source.write_text(json.dumps({**agent, "tools": json.dumps([{"name": "f"}])}) + "\n")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{source}:1: `tools` must be a list of function schemas, got str" in err
    assert "Traceback" not in err and not out.exists()


# --- 16: the GRPO batch line in its units -------------------------------------------------------


def test_the_grpo_batch_line_counts_prompts_and_completions(tmp_path, capsys):
    raw = minimal_grpo(
        batchsize_conf={"total_train_batch_size": 3, "max_per_device_train_batch_size": 5}
    )
    raw["training_args"]["num_generations"] = 4
    raw["training_args"]["output_dir"] = str(tmp_path / "out")
    code = main(["validate", str(write_config(tmp_path / "g.yaml", raw)), "--config-only"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (
        "batch: 3 prompts x 4 generations = 12 completions per step = 1 processes x 4 completions "
        "per device x 3 accumulation" in err
    )
    assert "total 3 = 1 processes" not in err
    assert resolve(load_config_dict(raw, "grpo").config, 1).per_device_train == 4


# --- 17: the output folder's and the data's problems in one report -----------------------------


def test_a_resume_problem_and_bad_rows_are_reported_together(tmp_path, tiny_llama, capsys):
    rows = [*synthetic_chats(3), {"messages": "not a list"}]
    config = minimal_sft(tiny_llama, write_jsonl(tmp_path / "d.jsonl", rows))
    config["training_args"] = {"output_dir": str(tmp_path / "out")}
    config["run_conf"]["resume_from_checkpoint"] = True  # and there is no checkpoint
    for command in (["sft"], ["validate"]):
        code = main([*command, str(write_config(tmp_path / "c.yaml", config))])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "run_conf.resume_from_checkpoint" in err
        assert "d.jsonl:4: `messages` must be a list of messages" in err
        assert "Traceback" not in err


# --- 8: the tokenizer in the resume fingerprint -------------------------------------------------


def test_a_fingerprint_from_before_the_tokenizer_was_recorded_still_resumes(tmp_path, tiny_llama):
    from finetuning.errors import UserError
    from finetuning.train.safety.fingerprint import FILE_NAME, check_resume, fingerprint

    config = load_config_dict(minimal_sft(tiny_llama), "sft").config
    stored = fingerprint(config)
    assert set(stored["tokenizer"]) == {"use_fast", "files_sha256"}
    resume = str(tmp_path / "checkpoint-2")
    del stored["tokenizer"]  # written by an older version
    (tmp_path / FILE_NAME).write_text(json.dumps(stored))
    check_resume(config, resume)  # nothing to compare with: not a change
    stored["tokenizer"] = {"use_fast": True, "files_sha256": "0" * 64}
    (tmp_path / FILE_NAME).write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"tokenizer\.files_sha256"):
        check_resume(config, resume)
