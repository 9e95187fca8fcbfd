"""Reward models end to end through the CLI (in-process) on the tiny model: train, preempt,
resume, then score the training pairs with plain transformers + PEFT and with `finetuning score`."""

from __future__ import annotations

import json
import logging

import pytest

from finetuning.cli import main
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.helpers import minimal_reward, sigterm_at_step, summary, write_config

pytestmark = pytest.mark.slow

LORA_SEQ_CLS = {  # task_type left out: reward sets SEQ_CLS
    "peft_type": "LORA",
    "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
}


def _pairs(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _plain_scores(base, adapter, rows):
    """Scores of prompt + chosen / rejected with transformers and PEFT only (no engine code)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter or base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    model.config.pad_token_id = tok.pad_token_id  # the original base has none; rows go one by one
    out = []
    for row in rows:
        pair = []
        for key in ("chosen_messages", "rejected_messages"):
            text = tok.apply_chat_template(row["prompt_messages"] + row[key], tokenize=False)
            # keep-original: the turn the template writes ends with "</s>\n", as training saw it
            ids = tok(text, return_tensors="pt", add_special_tokens=not text.startswith("<s>"))
            with torch.no_grad():
                pair.append(model(**ids).logits[0, 0].item())
        out.append(pair)
    return out


def test_reward_lora_preempted_resumed_scores_chosen_above_rejected(
    tmp_path, tiny_llama, preference_data, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    config = minimal_reward(tiny_llama, preference_data, peft_conf=LORA_SEQ_CLS)
    config["data_conf"]["chat_template_name"] = "keep-original"  # no new tokens: a quicker run
    config["training_args"] = {
        "learning_rate": 1e-2, "max_steps": 8, "logging_steps": 2, "save_strategy": "no",
        "output_dir": str(out), "max_length": 128,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8}
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    path = write_config(tmp_path / "reward.yaml", config)

    sigterm_at_step(monkeypatch, 3)
    assert main(["reward", str(path)]) == EXIT_PREEMPTED
    assert (out / "checkpoint-3").is_dir()
    monkeypatch.undo()
    assert main(["reward", str(path)]) == 0
    assert f"resuming from {out / 'checkpoint-3'}" in caplog.text

    # The run's own metrics: TRL's accuracy and margin, in the summary and the console.
    result = summary(out)
    assert result["steps"] == 8
    history = [h for h in result["history"] if "loss" in h]
    assert history[0]["loss"] > history[-1]["loss"], history
    assert result["rewards"]["accuracy"] >= 0.8 and result["rewards"]["margin"] > 0
    assert "rewards: accuracy" in caplog.text
    final = out / "checkpoint-final"
    saved = json.loads((final / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_CLS" and "score" in saved["modules_to_save"]

    # Plain transformers + PEFT: the base model, the adapter with its score head.
    rows = _pairs(preference_data)[:24]
    plain = _plain_scores(tiny_llama, final, rows)
    accuracy = sum(c > r for c, r in plain) / len(plain)
    assert accuracy >= 0.8, plain

    # merge-adapter: a plain sequence classifier with the same scores.
    merged = tmp_path / "merged"
    assert main(["merge-adapter", str(tiny_llama), str(final), str(merged)]) == 0
    merged_scores = _plain_scores(merged, None, rows[:4])
    flat = [score for pair in plain[:4] for score in pair]
    assert [score for pair in merged_scores for score in pair] == pytest.approx(flat, abs=1e-4)

    # `finetuning score`: the same scores (same tokens, batched and padded), one per conversation.
    pairs_in = tmp_path / "pairs.jsonl"
    pairs_in.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored = tmp_path / "scores.jsonl"
    args = ["score", "--model", str(tiny_llama), "--adapter", str(final)]
    assert main([*args, "--input", str(pairs_in), "--output", str(scored)]) == 0
    got = _pairs(scored)
    assert [r["chosen_score"] for r in got] == pytest.approx([c for c, _ in plain], abs=1e-4)
    assert [r["rejected_score"] for r in got] == pytest.approx([r for _, r in plain], abs=1e-4)
    chats_in = tmp_path / "chats.jsonl"
    chats_in.write_text(
        "".join(json.dumps({"messages": r["prompt_messages"] + r["chosen_messages"]}) + "\n"
                for r in rows[:3])
    )  # fmt: skip
    assert main([*args, "--input", str(chats_in), "--output", str(scored)]) == 0
    assert [r["score"] for r in _pairs(scored)] == pytest.approx(
        [c for c, _ in plain[:3]], abs=1e-4
    )


def test_full_parameter_reward_model_loads_in_plain_transformers_metrics_in_mlflow(
    tmp_path, tiny_llama, preference_data, monkeypatch
):
    from mlflow import MlflowClient
    from transformers import AutoModelForSequenceClassification

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out, store = tmp_path / "out", tmp_path / "mlruns"
    config = minimal_reward(tiny_llama, preference_data)
    config["data_conf"]["chat_template_name"] = "keep-original"  # no new tokens
    config["training_args"] = {
        "learning_rate": 1e-3, "max_steps": 3, "logging_steps": 1, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    path = write_config(tmp_path / "r.yaml", config)
    assert main(["reward", str(path), "--mlflow-server-uri", str(store)]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out / "checkpoint-final")
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert model.score.weight.shape[0] == 1
    assert "accuracy" in summary(out)["rewards"]
    # MLflow has the reward model's own metrics, as logged by TRL.
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs(["0"])
    assert {"loss", "accuracy", "margin", "mean_reward"} <= set(run.data.metrics)
    assert run.data.tags["finetuning.method"] == "reward"
