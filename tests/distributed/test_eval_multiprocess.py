"""Generation evals on 2 processes (torchrun, gloo on CPU): rows split, records gathered."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.distributed.conftest import process_env
from tests.e2e.test_evaluation import _eval_config
from tests.helpers import run_main, write_config

pytestmark = [pytest.mark.slow, pytest.mark.full]


def test_generation_eval_on_two_processes_matches_finetuning_eval(tmp_path, tiny_llama):
    out = tmp_path / "out"
    config = _eval_config(tmp_path, tiny_llama, out)
    config["training_args"].update(max_steps=2, eval_steps=2)
    path = write_config(tmp_path / "c.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "finetuning", "sft", str(path)],
        capture_output=True, text=True, env=process_env(tmp_path), timeout=600, cwd=tmp_path,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "2 processes" in log
    records = [
        json.loads(x) for x in (out / "evals" / "sums-step-2.jsonl").read_text().splitlines()
    ]
    assert [r["row"] for r in records] == [0, 1, 2]  # rank 0 had rows 0 and 2, rank 1 row 1
    history = json.loads((out / "run_summary.json").read_text())["history"]
    logged = {k: v for h in history if h.get("step") == 2 for k, v in h.items()}

    checkpoint = out / "checkpoint-final"
    result = run_main("eval", path, "--checkpoint", checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((checkpoint / "eval_results.json").read_text())["metrics"]
    assert saved["eval_sums_answer_length"] == logged["eval_sums_answer_length"]
    assert saved["eval_alpha_loss"] == pytest.approx(logged["eval_alpha_loss"], rel=1e-4)
    again = [json.loads(x) for x in (checkpoint / "evals" / "sums.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in again] == [r["completion"] for r in records]
