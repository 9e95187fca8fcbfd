"""MLflow tracking (precedence, file store, a real HTTP server, run resume), TensorBoard, reports."""

from __future__ import annotations

import json
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

from finetuning.config.loading import load_config_dict
from finetuning.tracking import resolve_tracking
from tests.helpers import minimal_sft, run_main, write_config

SECTION = {"mlflow_server_uri": "http://section:5000", "experiment_name": "from-section"}


def _config(tracking=None):
    return load_config_dict(minimal_sft(tracking=tracking), "sft").config


def _cli(uri=None, name=None, artifacts=None):
    return Namespace(mlflow_server_uri=uri, experiment_name=name, hf_mlflow_log_artifacts=artifacts)


@pytest.mark.parametrize(
    ("cli", "section", "env", "expected"),
    [
        (_cli("http://cli:1", "cli-exp"), SECTION, "http://env:3", ("http://cli:1", "cli-exp")),
        (_cli("http://cli:1"), None, None, ("http://cli:1", None)),  # MLflow's "Default"
        (_cli(), SECTION, "http://env:3", ("http://section:5000", "from-section")),
        (_cli(), None, "http://env:3", ("http://env:3", None)),
        (_cli(), None, None, None),
    ],
    ids=["cli-wins", "cli-default-experiment", "section-over-env", "env", "off"],
)
def test_precedence(cli, section, env, expected, monkeypatch):
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    if env:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resolved = resolve_tracking(_config(section), cli)
    if expected is None:
        assert resolved is None
    else:
        assert (resolved.uri, resolved.experiment_name) == expected


def test_local_path_becomes_a_file_uri(tmp_path):
    resolved = resolve_tracking(_config({**SECTION, "mlflow_server_uri": str(tmp_path / "ml")}))
    assert resolved.uri == (tmp_path / "ml").as_uri()


def test_cli_artifact_flag_overrides_the_section():
    config = _config({**SECTION, "hf_mlflow_log_artifacts": "True"})
    assert resolve_tracking(config, _cli()).log_artifacts is True
    assert resolve_tracking(config, _cli(artifacts="False")).log_artifacts is False


def _train_config(tmp_path, model, data, out, **training_args):
    config = minimal_sft(model, data)
    config["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.2}
    config["training_args"] = {
        "learning_rate": 2e-3, "max_steps": 6, "logging_steps": 1, "eval_strategy": "steps",
        "eval_steps": 3, "save_strategy": "steps", "save_steps": 3, "output_dir": str(out),
        **training_args,
    }  # fmt: skip
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    return config


def _client(uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _only_run(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _artifacts(client, run_id):
    return {a.path for a in client.list_artifacts(run_id)}


@pytest.mark.slow
def test_file_store_run_has_params_metrics_and_artifacts(tmp_path, tiny_llama, monkeypatch):
    from finetuning.testing import synthetic_chats, write_jsonl

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(40))
    store, out = tmp_path / "mlruns", tmp_path / "out"
    config = _train_config(tmp_path, tiny_llama, data, out)
    config["tracking"] = {
        "mlflow_server_uri": str(store),
        "experiment_name": "local",
        "run_name": "my-run",
    }
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(store.as_uri())
    run = _only_run(client, "local")
    assert run.info.run_name == "my-run"
    assert run.data.tags["finetuning.method"] == "sft"
    assert run.data.tags["finetuning.peft_type"] == "NO_PEFT"
    params = run.data.params
    assert params["config.sft_args.max_seq_length"] == "128"
    assert params["resolved.per_device_train_batch_size"] == "4"
    assert float(params["resolved.learning_rate"]) == pytest.approx(2e-3)
    metrics = run.data.metrics
    for key in ("loss", "eval_loss", "learning_rate", "grad_norm", "tokens_per_second"):
        assert key in metrics, sorted(metrics)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 6
    artifacts = _artifacts(client, run.info.run_id)
    assert {
        "resolved_config.yaml",
        "data_preflight.txt",
        "run_report.html",
        "loss.png",
    } <= artifacts


@pytest.mark.slow
def test_flags_after_the_command_log_into_mlflows_default_experiment(
    tmp_path, tiny_llama, monkeypatch
):
    """No experiment named: the run goes to MLflow's "Default" (no "default" beside it), and the
    console names the run and the command that opens the store."""
    from finetuning.testing import synthetic_chats, write_jsonl

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client here

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(24))
    store, out = tmp_path / "mlruns", tmp_path / "out"
    config = _train_config(tmp_path, tiny_llama, data, out, max_steps=2, eval_strategy="no")
    path = write_config(tmp_path / "c.yaml", config)
    result = run_main("sft", path, "--mlflow-server-uri", store, "--logging-level", "INFO")
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(store.as_uri())
    assert [e.name for e in client.search_experiments()] == ["Default"]
    (run,) = client.search_runs(["0"])
    assert f"MLflow run {run.info.run_id}" in result.stderr
    command = f"MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {store.as_uri()}"
    assert f"mlflow: run {run.info.run_id}; see it with: {command}" in result.stderr


@pytest.mark.full
@pytest.mark.slow
def test_http_server_run_and_resume_into_the_same_run(tmp_path, tiny_llama, mlflow_server):
    from finetuning.testing import synthetic_chats, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(40))
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", _train_config(tmp_path, tiny_llama, data, out))
    args = ("--mlflow-server-uri", mlflow_server, "--experiment-name", "over-http", "sft", path)
    result = run_main(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    client = _client(mlflow_server)
    run = _only_run(client, "over-http")
    assert run.info.status == "FINISHED"
    assert "run_report.html" in _artifacts(client, run.info.run_id)
    first_run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert first_run_id == run.info.run_id
    # Interrupt after the first checkpoint and resume: logging continues in the same run.
    shutil.rmtree(out / "checkpoint-6")
    shutil.rmtree(out / "checkpoint-final")
    result = run_main(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    run = _only_run(client, "over-http")
    assert run.info.run_id == first_run_id
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4, 4, 5, 5, 6, 6]  # steps 4-6 were logged twice


@pytest.mark.slow
def test_tracking_off_leaves_no_mlflow_directories(tmp_path, tiny_llama, monkeypatch):
    from finetuning.testing import synthetic_chats, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(40))
    out = tmp_path / "out"
    config = _train_config(tmp_path, tiny_llama, data, out, report_to=["mlflow"])
    result = run_main("sft", write_config(tmp_path / "c.yaml", config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.rglob("mlruns")) and not list(tmp_path.rglob("mlflow.db"))
    assert not (out / "mlflow_run.json").exists()
    _check_report(out)


def _check_report(out: Path) -> None:
    from PIL import Image

    png = out / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(png).convert("RGB")
    assert image.width > 600 and image.height > 200
    colored = sum(1 for r, g, b in image.getdata() if abs(r - g) > 40 or abs(g - b) > 40)
    assert colored > 200, "no curves drawn"
    page = (out / "run_report.html").read_text()
    assert "data:image/png;base64," in page
    assert "training loss fell" in page
    assert "Resolved config" in page and "max_seq_length: 128" in page
    assert "training rows:" in page
    history = json.loads((out / "run_summary.json").read_text())["history"]
    assert any("tokens_per_second" in h for h in history)


@pytest.mark.slow
def test_tensorboard_event_files_in_logging_dir(tmp_path, tiny_llama):
    from finetuning.testing import synthetic_chats, write_jsonl

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(40))
    out, logs = tmp_path / "out", tmp_path / "tb"
    config = _train_config(
        tmp_path, tiny_llama, data, out, report_to=["tensorboard"], logging_dir=str(logs)
    )
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    events = list(logs.rglob("events.out.tfevents.*"))
    assert events, list(logs.rglob("*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
