"""Continued pretraining end to end through the CLI (in-process) on the tiny model: chunked
documents, preempted and resumed, the output loads in plain transformers."""

from __future__ import annotations

import logging

import pytest

from finetuning.cli import main
from finetuning.testing import synthetic_documents, write_jsonl
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.helpers import losses, minimal_pretrain, sigterm_at_step, summary, write_config

pytestmark = pytest.mark.slow


def test_pretrain_chunks_preempted_resumed_and_loads(tmp_path, tiny_llama, monkeypatch, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    caplog.set_level(logging.INFO)
    docs = write_jsonl(tmp_path / "docs.jsonl", synthetic_documents(60, seed=3))
    out = tmp_path / "out"
    config = minimal_pretrain(tiny_llama, docs)
    config["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.1}
    config["sft_args"] = {"max_seq_length": 48}  # length_handling: chunk by default
    config["training_args"] = {
        "learning_rate": 3e-3, "max_steps": 8, "logging_steps": 1, "save_strategy": "no",
        "eval_strategy": "steps", "eval_steps": 8, "output_dir": str(out),
    }  # fmt: skip
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    path = write_config(tmp_path / "pretrain.yaml", config)

    sigterm_at_step(monkeypatch, 3)
    assert main(["pretrain", str(path)]) == EXIT_PREEMPTED
    assert (out / "checkpoint-3").is_dir()
    monkeypatch.undo()
    assert main(["pretrain", str(path)]) == 0
    assert f"resuming from {out / 'checkpoint-3'}" in caplog.text

    # The preflight says how many documents became how many chunks; every token is trained.
    preflight = (out / "data_preflight.txt").read_text()
    assert "tokens were split into" in preflight and "chunks (length_handling: chunk)" in preflight
    assert "100.0% of them are trained on" in preflight
    assert "end-of-document EOS '</s>' trained: yes" in preflight
    result = summary(out)
    assert result["steps"] == 8 and result["eval_loss"] is not None
    trained = losses(out)
    assert trained[-1] < trained[0], trained

    # Plain transformers: a causal LM with the tokenizer unchanged (no chat template tokens).
    final = out / "checkpoint-final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert len(tok) == len(AutoTokenizer.from_pretrained(tiny_llama))
    ids = tok("the apple is", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 3
