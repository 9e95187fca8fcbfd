"""Reward-model config rules, the score-head guard, and its metrics in the summary and report."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from finetuning.train.methods.reward import check_score_head_trains
from finetuning.train.reporting.report import figure
from finetuning.train.reporting.summary import RunSummary, summarize
from tests.helpers import minimal_reward

LORA = {"peft_type": "LORA", "peft_kwargs": {"r": 4}}


def test_an_adapter_of_a_reward_model_is_seq_cls_by_default_and_only():
    config = load_config_dict(minimal_reward(peft_conf=LORA), "reward").config
    assert config.peft_conf.task_type == "SEQ_CLS"
    assert config.training_args["bf16"] is False  # the engine's default, once, for reward
    wrong = minimal_reward(peft_conf={**LORA, "task_type": "CAUSAL_LM"})
    with pytest.raises(UserError, match="a reward model is a sequence classifier: use SEQ_CLS"):
        load_config_dict(wrong, "reward")
    with pytest.raises(UserError, match="sft_args: must be absent or null for reward"):
        load_config_dict(minimal_reward(sft_args={"max_seq_length": 8}), "reward")


def test_a_score_head_that_would_not_train_is_a_user_error():
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.score = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)

    model = Model()
    check_score_head_trains(model)
    model.score.requires_grad_(False)
    with pytest.raises(UserError, match="score head would not train"):
        check_score_head_trains(model)


HISTORY = [
    {"step": 2, "loss": 0.6, "accuracy": 0.5, "margin": 0.1, "mean_reward": 0.0},
    {"step": 4, "loss": 0.2, "accuracy": 1.0, "margin": 2.5, "mean_reward": 0.3},
]


def test_reward_accuracy_and_margin_reach_the_summary_and_the_report():
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    state = SimpleNamespace(global_step=4, num_input_tokens_seen=100, log_history=HISTORY)
    trainer = SimpleNamespace(state=state)
    result = SimpleNamespace(metrics={"train_runtime": 1.0})
    throughput = SimpleNamespace(first_step_seconds=0.5)
    summary = summarize(trainer, result, throughput, Path("/out/final"), 2.0)
    assert summary.rewards == {"accuracy": 1.0, "margin": 2.5, "mean_reward": 0.3}
    assert "rewards: accuracy 1.0000, margin 2.5000" in summary.format()
    fig = figure(HISTORY)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert "reward model" in titles
    finally:
        plt.close(fig)
    assert isinstance(summary, RunSummary)


def test_validate_a_reward_config_counts_the_pairs_dropped_for_length(
    tmp_path, tiny_llama, preference_data, monkeypatch, capsys
):
    from finetuning.cli import main
    from tests.helpers import write_config

    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(tmp_path / "cache"))
    config = minimal_reward(tiny_llama, preference_data)
    config["training_args"] = {"max_length": 30, "output_dir": str(tmp_path / "out")}
    assert main(["validate", str(write_config(tmp_path / "r.yaml", config))]) == 0
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert "method: reward" in text and "max length 30 (a longer pair is dropped)" in text
    assert "rows longer than 30 tokens were dropped (training_args.max_length)" in text
    assert "valid reward config" in text
