"""`finetuning init example && finetuning sft example/sft.yaml`, run twice; the DPO, GRPO and
generate examples; init on a changed example."""

from __future__ import annotations

import pytest
import yaml

from finetuning.errors import UserError
from tests.helpers import run_main

pytestmark = pytest.mark.slow


def _stamp(path):
    return path.read_bytes(), path.stat().st_mtime_ns


def test_readme_one_liner_run_a_second_time_changes_nothing(trained_chatml):
    """The fixture ran the one-liner once (init, then the SFT run); here it runs again."""
    example = trained_chatml.parent
    outputs = ["run_summary.json", "run_report.html", "loss.png", "data_preflight.txt"]
    before = {name: _stamp(trained_chatml / name) for name in outputs}
    init = run_main("init", example)
    assert init.returncode == 0, init.stderr
    assert "already holds the unchanged example; left it alone" in init.stdout
    result = run_main("sft", example / "sft.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"the run in {trained_chatml} is complete (step 119 of 119" in result.stderr
    assert "nothing changed" in result.stderr
    assert "Loading weights" not in result.stderr and "tokens/s" not in result.stderr
    assert {name: _stamp(trained_chatml / name) for name in outputs} == before


def test_generate_example_config_runs_on_the_trained_example(trained_chatml, tmp_path):
    from finetuning.tools.generate import generate_from_config

    out = generate_from_config(trained_chatml.parent / "generate.yaml", tmp_path / "answers.yaml")
    records = yaml.safe_load(out.read_text())
    assert len(records) == 8
    assert sum(r["answer"] == r["correct_answers"][0] for r in records) >= 4, records


@pytest.mark.full
def test_dpo_example_trains_offline_on_the_example_model(tmp_path):
    from finetuning.config.loading import load_config
    from finetuning.tools.init import init_example
    from finetuning.train.methods import dpo

    root = tmp_path / "example"
    init_example(root, rows=400)  # 100 preference rows: 6 steps, so one logged at step 5
    summary = dpo.run(load_config(root / "dpo.yaml", "dpo"))
    assert summary.steps >= 1
    assert (root / "checkpoints-dpo" / "checkpoint-final" / "model.safetensors").is_file()
    assert "rewards/margins" in summary.rewards


def test_grpo_example_trains_offline_on_the_example_model(tmp_path):
    from finetuning.config.loading import load_config_dict
    from finetuning.tools.init import init_example
    from finetuning.train.methods import grpo

    root = tmp_path / "example"
    init_example(root, rows=64)
    raw = yaml.safe_load((root / "grpo.yaml").read_text())
    assert [r["function"] for r in raw["grpo_args"]["rewards"]] == ["exact_answer", "length"]
    rows = (root / "data" / "arithmetic.jsonl").read_text().splitlines()
    assert len(rows) == 128 and '"answer"' in rows[0]
    raw["training_args"].update(max_steps=2, max_completion_length=4)  # the example runs 30
    summary = grpo.run(load_config_dict(raw, "grpo", root / "grpo.yaml"))
    assert summary.steps == 2
    assert (root / "checkpoints-grpo" / "checkpoint-final" / "model.safetensors").is_file()
    assert {"reward", "rewards/exact_answer/mean", "kl"} <= set(summary.rewards)
    assert (root / "checkpoints-grpo" / "completions.jsonl").is_file()


def test_init_on_a_changed_example_or_another_folder(tmp_path, capsys):
    from finetuning.tools.init import init_example

    root = tmp_path / "example"
    init_example(root, rows=40)
    original = (root / "sft.yaml").read_text()
    (root / "sft.yaml").write_text(original.replace("num_train_epochs: 1", "num_train_epochs: 3"))
    with pytest.raises(UserError, match=r"changed since `finetuning init` wrote it \(sft.yaml\)"):
        init_example(root, rows=40)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "keep.txt").write_text("mine")
    init_example(root, rows=40, force=True)
    assert (root / "sft.yaml").read_text() == original
    assert (root / "checkpoints" / "keep.txt").read_text() == "mine"
    capsys.readouterr()
    init_example(root, rows=40)
    assert "unchanged example; left it alone" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="add --force"):
        init_example(other)


@pytest.mark.full
def test_preference_method_examples_train_offline_on_the_example_model(tmp_path):
    import json

    from finetuning.cli import main
    from finetuning.tools.init import PREFERENCE_CONFIGS, init_example

    root = tmp_path / "example"
    init_example(root, rows=64)  # 16 rows each: one optimizer step per example
    assert sorted(PREFERENCE_CONFIGS) == ["kto.yaml", "orpo.yaml", "simpo.yaml"]
    for name in PREFERENCE_CONFIGS:
        method = name.removesuffix(".yaml")
        assert main([method, str(root / name)]) == 0, name
        out = root / f"checkpoints-{method}"
        assert (out / "checkpoint-final" / "model.safetensors").is_file()
        summary = json.loads((out / "run_summary.json").read_text())
        assert summary["steps"] >= 1 and summary["eval_loss"] is not None, name
    preflight = (root / "checkpoints-kto" / "data_preflight.txt").read_text()
    assert "kto examples:" in preflight and "desirable_weight 0.6" in preflight


def test_reward_and_pretrain_examples_train_offline_on_the_example_model(tmp_path, trained_chatml):
    from finetuning.config.loading import load_config
    from finetuning.train.methods import pretrain, reward

    root = trained_chatml.parent  # the session's `finetuning init` example, left unchanged
    for name in ("reward.yaml", "pretrain.yaml"):  # two steps of each, outputs under tmp_path
        text = (root / name).read_text().replace(f"{root}/checkpoints", f"{tmp_path}/checkpoints")
        text = text.replace(f"{root}/logs", f"{tmp_path}/logs").replace(
            "logging_steps: 5", "logging_steps: 1"
        )
        (tmp_path / name).write_text(text.replace("num_train_epochs: 1", "max_steps: 2"))
    summary = reward.run(load_config(tmp_path / "reward.yaml", "reward"))
    assert summary.steps == 2 and "accuracy" in summary.rewards
    final = tmp_path / "checkpoints-reward" / "checkpoint-final"
    assert (final / "adapter_model.safetensors").is_file()
    summary = pretrain.run(load_config(tmp_path / "pretrain.yaml", "pretrain"))
    assert summary.steps == 2 and summary.eval_loss is not None
    assert (tmp_path / "checkpoints-pretrain" / "checkpoint-final" / "model.safetensors").is_file()
    preflight = (tmp_path / "checkpoints-pretrain" / "data_preflight.txt").read_text()
    assert "chunks (length_handling: chunk)" in preflight
