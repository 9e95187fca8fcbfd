"""GRPO end to end through the CLI (in-process) on the tiny model: rewards, preemption, outputs."""

from __future__ import annotations

import json
import logging

import pytest

from finetuning.cli import main
from finetuning.testing import synthetic_arithmetic, write_jsonl
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.e2e.test_sft import LORA
from tests.helpers import minimal_grpo, sigterm_at_step, summary, write_config

pytestmark = pytest.mark.slow

USER_REWARDS = '''
def distinct_letters(completions, answer, scale=1.0, **kwargs):
    """Varies between completions, so the advantages (and the loss) are not all zero."""
    assert len(answer) == len(completions)
    return [scale * len(set(c.lower()) & set("abcdefghijklmnopqrstuvwxyz")) / 26 for c in completions]
'''


@pytest.fixture(scope="module")
def arithmetic(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("grpo") / "sums.jsonl", synthetic_arithmetic(16))


def test_grpo_builtin_and_file_rewards_preempted_and_resumed(
    tmp_path, tiny_llama, arithmetic, monkeypatch, caplog
):
    caplog.set_level(logging.INFO)
    (tmp_path / "my_rewards.py").write_text(USER_REWARDS)
    out = tmp_path / "out"
    config = minimal_grpo(tiny_llama, arithmetic, peft_conf=LORA)
    config["training_args"].update(
        output_dir=str(out), max_steps=3, logging_steps=1, save_steps=10, beta=0.04
    )
    config["grpo_args"]["rewards"].append(
        {"function": "my_rewards.py:distinct_letters", "weight": 0.5, "kwargs": {"scale": 2.0}}
    )
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    config["tracking"] = {"mlflow_server_uri": str(store), "experiment_name": "grpo"}
    path = write_config(tmp_path / "grpo.yaml", config)  # the file path is relative to this

    sigterm_at_step(monkeypatch, 2)
    assert main(["grpo", str(path)]) == EXIT_PREEMPTED
    assert (out / "checkpoint-2").is_dir()
    monkeypatch.undo()
    assert main(["grpo", str(path)]) == 0
    assert f"resuming from {out / 'checkpoint-2'}" in caplog.text

    found = summary(out)
    assert found["steps"] == 3
    steps = [h for h in found["history"] if "loss" in h]
    assert [h["step"] for h in steps] == [1, 2, 3]  # the mean reward of every step
    for h in steps:
        assert h["rewards/exact_answer/mean"] == 0.0  # a random model does not add up
        assert 0.0 < h["rewards/distinct_letters/mean"] <= 2.0
        # The total is the weighted sum of the functions' means.
        expected = h["rewards/exact_answer/mean"] + 0.5 * h["rewards/distinct_letters/mean"]
        assert h["reward"] == pytest.approx(expected, rel=1e-4)
        assert {"reward_std", "kl", "completions/mean_length"} <= set(h)
        assert 1 <= h["completions/mean_length"] <= 8
    assert any(h["loss"] != 0.0 for h in steps)  # the file reward gives the group a spread
    assert {"reward", "kl", "rewards/distinct_letters/mean"} <= set(found["rewards"])

    # Sampled completions with their rewards, every logging step, prompts from our template.
    samples = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2, 3}
    first = samples[0]
    assert first["prompt"].startswith("<s><|im_start|>user\nWhat is ")
    assert first["prompt"].endswith("<|im_start|>assistant\n")
    assert set(first["rewards"]) == {"exact_answer", "distinct_letters"}
    report = (out / "run_report.html").read_text()
    assert "Sampled completions" in report and "distinct_letters" in report

    # MLflow has the reward metrics of every step and the sampled completions.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("grpo").experiment_id])
    assert {"reward", "reward_std", "kl", "rewards/distinct_letters/mean"} <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "reward")) == 3
    assert "completions.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id)}

    # The adapter loads with PEFT on the base model and generates.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "checkpoint-final")
    base = AutoModelForCausalLM.from_pretrained(out / "checkpoint-new-basemodel")
    model = PeftModel.from_pretrained(base, out / "checkpoint-final")
    ids = tokenizer("What is 1 + 2?", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] > ids.shape[1]


@pytest.mark.parametrize(
    ("function", "kwargs", "message"),
    [
        ("missing.py:score", {}, "reward file not found"),
        ("my_rewards.py:scroe", {}, "did you mean `score`?"),
        ("no_such_package.rewards:score", {}, "module 'no_such_package.rewards' not found"),
        ("my_rewards.py:positional", {}, "must accept `completions`"),
        ("my_rewards.py:plain", {"bonus": 1}, "kwargs.bonus is not a parameter"),
        ("my_rewards.py:needs_label", {}, "needs 'label'"),
        ("regex_format", {"pattern": "("}, "not a valid regular expression"),
    ],
)
def test_a_bad_reward_spec_exits_2_before_the_model_loads(
    tmp_path, tiny_llama, arithmetic, monkeypatch, capsys, function, kwargs, message
):
    (tmp_path / "my_rewards.py").write_text(
        "def score(completions, **kw):\n    return [0.0] * len(completions)\n"
        "def positional(texts):\n    return texts\n"
        "def plain(completions):\n    return [0.0] * len(completions)\n"
        "def needs_label(completions, label):\n    return [0.0] * len(completions)\n"
    )
    from finetuning.train import stages

    def no_model(*args, **kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(stages, "load_model", no_model)
    config = minimal_grpo(tiny_llama, arithmetic)
    config["training_args"]["output_dir"] = str(tmp_path / "out")
    config["grpo_args"] = {"rewards": [{"function": function, "kwargs": kwargs}]}
    assert main(["grpo", str(write_config(tmp_path / "grpo.yaml", config))]) == 2
    err = capsys.readouterr().err
    assert "grpo_args.rewards[0]" in err and message in err, err
