"""Evaluation end to end through the CLI: per-source losses, a generation eval, `finetuning eval`."""

from __future__ import annotations

import json

import pytest

from finetuning.testing import synthetic_arithmetic, synthetic_chats, write_jsonl
from tests.helpers import minimal_sft, run_main, write_config

pytestmark = pytest.mark.slow

METRIC_FILE = """
def answer_length(completions, **kwargs):
    return [float(len(c)) for c in completions]
"""


def _eval_config(tmp_path, model, out):
    data = write_jsonl(tmp_path / "train.jsonl", synthetic_chats(32, seed=0))
    alpha = write_jsonl(tmp_path / "a.jsonl", synthetic_chats(8, seed=1))
    beta = write_jsonl(tmp_path / "beta.jsonl", synthetic_chats(8, seed=2))
    sums = write_jsonl(tmp_path / "sums.jsonl", synthetic_arithmetic(3, seed=0))
    (tmp_path / "metrics.py").write_text(METRIC_FILE)
    config = minimal_sft(model, data)
    config["data_conf"]["validation_data"] = {
        "type": "CONCATENATION",
        "datasets": [{"path": str(alpha), "label": "alpha"}, {"path": str(beta)}],
    }
    config["training_args"] = {
        "learning_rate": 1e-3, "max_steps": 4, "eval_strategy": "steps", "eval_steps": 2,
        "logging_steps": 2, "save_strategy": "steps", "save_steps": 2, "output_dir": str(out),
        "load_best_model_at_end": True, "metric_for_best_model": "eval_beta_loss",
    }  # fmt: skip
    config["eval_conf"] = {
        "generation": [
            {
                "name": "sums",
                "path": str(sums),
                "max_new_tokens": 6,
                "metrics": [
                    {"function": "exact_answer"},
                    {"function": "metrics.py:answer_length", "weight": 0.0},
                ],
            }
        ]
    }
    return config


def test_per_source_and_generation_evals_then_finetuning_eval(tmp_path, tiny_llama):
    out = tmp_path / "out"
    config_path = write_config(tmp_path / "c.yaml", _eval_config(tmp_path, tiny_llama, out))
    result = run_main("sft", config_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "run_summary.json").read_text())["history"]
    by_step: dict[int, dict] = {}
    for entry in history:
        by_step.setdefault(entry["step"], {}).update(entry)
    for key in ("eval_loss", "eval_alpha_loss", "eval_beta_loss", "eval_sums_exact_answer"):
        assert [s for s, h in sorted(by_step.items()) if key in h] == [2, 4], key
    lines = (out / "evals" / "sums-step-4.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 3 and records[0]["where"].endswith("sums.jsonl:1")
    assert records[0]["scores"]["answer_length"] == float(len(records[0]["completion"]))
    assert "eval_alpha_loss" in (out / "run_report.html").read_text()
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_metric"] == min(by_step[2]["eval_beta_loss"], by_step[4]["eval_beta_loss"])

    checkpoint = out / "checkpoint-final"
    result = run_main("eval", config_path, "--checkpoint", checkpoint, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "eval_alpha_loss" in result.stdout
    saved = json.loads((checkpoint / "eval_results.json").read_text())
    last = by_step[int(state["best_model_checkpoint"].rsplit("-", 1)[1])]  # the final weights
    for key in ("eval_loss", "eval_alpha_loss", "eval_beta_loss"):
        assert saved["metrics"][key] == pytest.approx(last[key], rel=1e-4), key
    for key in ("eval_sums_exact_answer", "eval_sums_answer_length"):
        assert saved["metrics"][key] == last[key], key  # greedy: the same completions
    assert saved["rows"] == {
        "validation": 16, "validation/alpha": 8, "validation/beta": 8, "generation/sums": 3,
    }  # fmt: skip
    assert saved["checkpoint"] == str(checkpoint.resolve()) and len(saved["config_hash"]) == 64
    again = [json.loads(x) for x in (checkpoint / "evals" / "sums.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in again] == [r["completion"] for r in records]


LORA = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
}


@pytest.mark.full
def test_lora_auto_split_token_mix_mlflow_and_lm_eval_at_the_end(tmp_path, tiny_llama, monkeypatch):
    import importlib.util

    from mlflow import MlflowClient

    from tests.train.test_evaluation import TASK

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out, store = tmp_path / "out", tmp_path / "mlruns"
    config = _eval_config(tmp_path, tiny_llama, out)
    long = synthetic_chats(24, seed=4)
    for row in long:
        row["messages"][-1]["content"] = " ".join([row["messages"][-1]["content"]] * 4)
    docs = write_jsonl(tmp_path / "docs.jsonl", long)
    config["peft_conf"] = LORA
    config["sft_args"] = {"max_seq_length": 1024}
    config["data_conf"]["training_data"] = {
        "type": "PRECOMPUTE_WEIGHTED_MIX",
        "weight_by": "tokens",
        "datasets": [
            {"path": str(tmp_path / "train.jsonl"), "label": "chat"},
            {"path": str(docs)},
        ],
    }
    config["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.2}
    config["training_args"]["metric_for_best_model"] = "eval_chat_loss"
    config["tracking"] = {"mlflow_server_uri": str(store), "experiment_name": "evals"}
    lm_eval = importlib.util.find_spec("lm_eval") is not None
    if lm_eval:
        tasks = tmp_path / "tasks"
        tasks.mkdir()
        rows = [{"question": "1 + 1?", "choices": ["2", "3"], "label": 0}] * 2
        (tasks / "tiny_sums.yaml").write_text(
            TASK.format(data=write_jsonl(tasks / "t.jsonl", rows))
        )
        config["eval_conf"]["lm_eval"] = {"tasks": ["tiny_sums"], "include_path": str(tasks)}
    config_path = write_config(tmp_path / "c.yaml", config)
    result = run_main("sft", config_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    preflight = (out / "data_preflight.txt").read_text()
    assert "mixture (weight_by: tokens" in preflight and "chat: weight 1" in preflight

    client = MlflowClient(tracking_uri=store.as_uri())
    run = client.search_runs([client.get_experiment_by_name("evals").experiment_id])[0]
    metrics = run.data.metrics
    for key in ("eval_loss", "eval_chat_loss", "eval_docs_loss", "eval_sums_exact_answer"):
        assert key in metrics, sorted(metrics)
    assert "mixture.docs.share_realized" in run.data.params
    evals = {a.path for a in client.list_artifacts(run.info.run_id, "evals")}
    assert "evals/sums-step-4.jsonl" in evals, evals
    if lm_eval:
        assert "lm_eval/tiny_sums/acc" in metrics
        assert (
            "lm_eval/tiny_sums/acc"
            in json.loads((out / "eval_results.json").read_text())["metrics"]
        )

    checkpoint = out / "checkpoint-final"
    assert (checkpoint / "adapter_config.json").is_file()
    config["eval_conf"].pop("lm_eval", None)
    result = run_main("eval", write_config(tmp_path / "e.yaml", config), "--checkpoint", checkpoint)
    assert result.returncode == 0, result.stderr[-4000:]
    saved = json.loads((checkpoint / "eval_results.json").read_text())["metrics"]
    assert saved["eval_chat_loss"] == pytest.approx(metrics["eval_chat_loss"], rel=1e-4)
    assert saved["eval_sums_answer_length"] == metrics["eval_sums_answer_length"]
    runs = client.search_runs(
        [client.get_experiment_by_name("evals").experiment_id],
        "attributes.run_name = 'eval checkpoint-final'",
    )
    assert len(runs) == 1 and runs[0].data.metrics["eval_chat_loss"] == saved["eval_chat_loss"]
    assert "eval_results.json" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
