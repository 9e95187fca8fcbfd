"""The plan: built once before the model loads, frozen, shared by `validate` and the recipes."""

from __future__ import annotations

import dataclasses
import os

import pytest
import yaml

from finetuning.config.loading import load_config, load_config_dict
from finetuning.errors import UserError
from finetuning.testing import synthetic_chats, write_jsonl
from finetuning.train.arguments import trainer_kwargs
from finetuning.train.batch import resolve
from finetuning.train.plan import build_plan
from finetuning.train.reporting.summary import check_output_dir
from tests.helpers import minimal_dpo, minimal_sft, write_config


def _plan(raw, method="sft", world_size=1, **kwargs):
    return build_plan(load_config_dict(raw, method), world_size, **kwargs)


def test_default_learning_rates_come_from_the_field_snapshot():
    sft = minimal_sft(training_args={})
    dpo = minimal_dpo(training_args={})
    assert resolve(load_config_dict(sft, "sft").config, 1).learning_rate == 5e-5
    assert resolve(load_config_dict(dpo, "dpo").config, 1).learning_rate == 1e-6


def test_building_the_plan_creates_nothing_and_starts_no_tracking(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    out, ml = tmp_path / "deep" / "out", tmp_path / "ml"
    raw = minimal_sft(
        training_args={"learning_rate": 1e-3, "output_dir": str(out)},
        tracking={"mlflow_server_uri": str(ml), "experiment_name": "e"},
    )
    plan = _plan(raw, world_size=2, with_data=False)
    assert not out.exists() and not ml.exists() and not (tmp_path / "deep").exists()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert plan.tracking.uri == ml.as_uri() and plan.tracking.run_name.startswith("sft-")
    assert (plan.resolved.world_size, plan.resolved.per_device_train) == (2, 2)
    assert plan.output_dir == out and plan.resume is None
    assert plan.new_basemodel_dir == out / "checkpoint-new-basemodel"
    text = plan.format()
    assert "(will be created)" in text and f"tracking: MLflow {ml.as_uri()}" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.resume = "x"  # type: ignore[misc]


def test_the_plan_checks_outputs_resume_and_batch_before_any_data(tmp_path):
    (tmp_path / "a-file").write_text("x")
    raw = minimal_sft(training_args={"output_dir": str(tmp_path / "a-file" / "out")})
    with pytest.raises(UserError, match="output_dir: cannot write"):
        _plan(raw, with_data=False)
    raw = minimal_sft(
        training_args={"output_dir": str(tmp_path / "o")},
        run_conf={"model": "/m", "resume_from_checkpoint": True},
    )
    with pytest.raises(UserError, match="has no checkpoint-N folder"):
        _plan(raw, with_data=False)
    with pytest.raises(UserError, match="not divisible by the 3 processes"):
        _plan(minimal_sft(training_args={"output_dir": str(tmp_path / "o")}), world_size=3)


def test_check_output_dir_creates_nothing(tmp_path):
    target = tmp_path / "x" / "y"
    check_output_dir(target)
    assert not (tmp_path / "x").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="is not a folder"):
        check_output_dir(tmp_path / "f")


def test_the_plan_holds_tokenizer_and_data(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(12))
    raw = minimal_sft(tiny_llama, data, training_args={"output_dir": str(tmp_path / "o")})
    plan = _plan(raw)
    assert len(plan.data.train) == 12 and plan.report.setup is plan.setup
    assert plan.settings.max_length == 128
    assert plan.setup.tokenizer.pad_token is not None
    assert not (tmp_path / "o").exists()


def test_resolved_config_records_the_trained_rate_and_reloads_to_it(tmp_path):
    raw = minimal_sft(
        training_args={"learning_rate": 1e-3, "output_dir": str(tmp_path / "o")},
        overrides={"lr_multiplier": 2.0, "lr_batch_size_scaling": "sqrt"},
    )
    plan = _plan(raw, with_data=False)
    trained = 1e-3 * 2.0 * 2  # sqrt(total batch 4)
    assert plan.resolved.learning_rate == pytest.approx(trained)
    assert trainer_kwargs(plan.config, plan.resolved, plan.output_dir, False)[
        "learning_rate"
    ] == pytest.approx(trained)
    # What train_and_save writes into resolved_config.yaml:
    path = tmp_path / "resolved_config.yaml"
    path.write_text(plan.trained_config_header() + yaml.safe_dump(plan.trained_config()))
    assert "learning_rate 0.001, lr_multiplier 2, lr_batch_size_scaling sqrt" in path.read_text()
    saved = yaml.safe_load(path.read_text())
    assert saved["training_args"]["learning_rate"] == pytest.approx(trained)
    again = build_plan(load_config(path, "sft"), 1, with_data=False)
    assert again.resolved.learning_rate == pytest.approx(trained)  # never scaled twice
    assert again.trained_config() == plan.trained_config()


def test_a_custom_new_basemodel_name_is_in_the_plan(tmp_path):
    raw = minimal_sft(training_args={"output_dir": str(tmp_path / "o")})
    raw["sft_args"]["save_name_if_new_basemodel"] = "grown-base"
    assert _plan(raw, with_data=False).new_basemodel_dir == tmp_path / "o" / "grown-base"


def test_validate_prints_the_plan_and_creates_no_output_folder(tiny_llama, tmp_path, capsys):
    from finetuning.cli import main

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(12))
    out = tmp_path / "o"
    raw = minimal_sft(tiny_llama, data, training_args={"output_dir": str(out)})
    raw["tracking"] = {"mlflow_server_uri": str(tmp_path / "ml"), "experiment_name": "e"}
    code = main(["validate", str(write_config(tmp_path / "c.yaml", raw))])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "plan:" in err and "batch: total 4 = 1 processes x 4 per device" in err
    assert f"output_dir: {out} (will be created)" in err
    assert "training rows: 12" in err
    assert not out.exists() and not (tmp_path / "ml").exists()
