"""Generation with a trained tiny model: stops at the end-of-turn token; chat over stdin."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import run_main

pytestmark = pytest.mark.slow

QUESTIONS = ["what color is the apple?", "what color is the banana?", "add one and two."]


def test_generate_jsonl_stops_at_end_of_turn(trained_chatml, tmp_path):
    model = trained_chatml / "checkpoint-final"
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "messages": [{"role": "user", "content": q}]}) + "\n"
                              for i, q in enumerate(QUESTIONS)))  # fmt: skip
    out = tmp_path / "out.jsonl"
    result = run_main(
        "generate", "--model", model, "--input", source, "--output", out, "--max-new-tokens", "40"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [0, 1, 2]
    assert all(r["stopped_at_end_of_turn"] for r in records), records
    assert records[0]["answer"] == "the apple is red."
    assert all("<|im_end|>" not in r["answer"] for r in records)


@pytest.mark.full
def test_chat_over_stdin(trained_chatml):
    model = trained_chatml / "checkpoint-final"
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "finetuning", "chat", str(model), "--max-new-tokens", "40"],
        input="what color is the apple?\n/reset\nwhat color is the banana?\n/exit\n",
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the apple is red." in result.stdout
    assert "the banana is green." in result.stdout


def test_established_generate_config(trained_chatml, tmp_path):
    model = trained_chatml / "checkpoint-final"
    data = tmp_path / "eval.jsonl"
    data.write_text(json.dumps({"prompt_messages": [{"role": "user", "content": QUESTIONS[0]}],
                                "chosen_messages": [{"role": "assistant", "content": "the apple is red."}],
                                "rejected_messages": [{"role": "assistant", "content": "no"}]}) + "\n")  # fmt: skip
    for prompt_conf, expected in [
        ({"type": "eval-data", "data": {"path": str(data)}}, 1),
        ({"type": "open-input", "input": "<|im_start|>user\nadd one and two.<|im_end|>\n<|im_start|>assistant\n",
          "num_samples": 2}, 2),
    ]:  # fmt: skip
        config = tmp_path / "gen.yaml"
        config.write_text(yaml.safe_dump({
            "model_conf": {"model": str(model), "model_args": {"torch_dtype": "float32"}},
            "prompt_conf": prompt_conf,
            "hf_gen_params": {"max_new_tokens": 20, "do_sample": False},
        }))  # fmt: skip
        out = tmp_path / "out.yaml"
        result = run_main("generate", config, out)
        assert result.returncode == 0, result.stderr[-3000:]
        records = yaml.safe_load(out.read_text())
        assert len(records) == expected
        for record in records:
            assert {"dataset", "id", "prompt", "answer", "correct_answers", "gen_params"} <= set(
                record
            )
        if prompt_conf["type"] == "eval-data":
            assert records[0]["answer"] == "the apple is red."
            assert records[0]["correct_answers"] == ["the apple is red."]
        else:
            assert records[0]["answer"] == "one plus two is three."
