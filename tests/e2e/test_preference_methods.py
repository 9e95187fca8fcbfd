"""KTO, ORPO and SimPO end to end through the CLI (in-process) on the tiny model.

One test per method: train with LoRA, stop by SIGTERM after step 2, resume to step 4, check
the method's own metrics in the summary and report, that one model was loaded (no reference
copy for ORPO / SimPO; for KTO with an adapter, TRL's reference is the adapter's start), and
that the saved adapter loads in plain transformers + PEFT; MLflow (a file store) has the metrics.
"""

from __future__ import annotations

import gc
import json
import logging

import pytest
import yaml

from finetuning.cli import main
from finetuning.testing import synthetic_feedback, write_jsonl
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.helpers import minimal_dpo, sigterm_at_step, summary, write_config

pytestmark = pytest.mark.slow

LORA = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]},
}

#: The metrics each method logs (TRL 1.16) that must reach run_summary.json and the report.
OWN_METRICS = {
    "kto": ("kl", "rewards/chosen", "rewards/rejected"),
    "orpo": ("log_odds_ratio", "log_odds_chosen", "rewards/accuracies"),
    "simpo": ("rewards/accuracies", "rewards/margins"),
}


@pytest.fixture(scope="module")
def feedback_data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "kto.jsonl", synthetic_feedback(24, 3))


def _config(method, model, paths, out):
    config = minimal_dpo(model, paths[0])
    config["method"] = method
    config["data_conf"]["chat_template_name"] = "keep-original"  # no resize: a plain base loads
    config["data_conf"]["training_data"]["datasets"] = [{"path": str(p)} for p in paths]
    config["training_args"] = {
        "learning_rate": 5e-3, "max_steps": 4, "logging_steps": 1, "output_dir": str(out),
        "max_length": 96,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4}
    config["peft_conf"] = LORA
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    return config


def _count_models(monkeypatch, model_class):
    """Record per launch: ``from_pretrained`` calls, and live models when training starts."""
    from transformers import AutoModelForCausalLM, TrainerCallback

    from finetuning.train import stages

    loads, live = [], []
    original = AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return original(*args, **kwargs)

    class Census(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            gc.collect()
            live.append(sum(type(o) is model_class for o in gc.get_objects()))

    callbacks = stages.callbacks

    def with_census(ctx):
        found = callbacks(ctx)
        return type(found)(found.throughput, found.preemption, found.mlflow, (*found.all, Census()))

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    monkeypatch.setattr(stages, "callbacks", with_census)
    return loads, live


def _mlflow_metrics(store, experiment):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {key for run in runs for key in run.data.metrics}


@pytest.mark.parametrize("method", ["kto", "orpo", "simpo"])
def test_method_trains_resumes_after_sigterm_and_loads_in_peft(
    method, tmp_path, tiny_llama, preference_data, feedback_data, monkeypatch, caplog
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    # KTO reads its own rows and preference rows (unpaired) in one run.
    paths = [feedback_data, preference_data] if method == "kto" else [preference_data]
    config = _config(method, tiny_llama, paths, out)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    config["tracking"] = {"mlflow_server_uri": str(store), "experiment_name": method}
    path = write_config(tmp_path / f"{method}.yaml", config)
    loads, live = _count_models(monkeypatch, LlamaForCausalLM)
    sigterm_at_step(monkeypatch, 2)
    assert main([method, str(path)]) == EXIT_PREEMPTED
    assert (out / "checkpoint-2").is_dir()
    monkeypatch.undo()
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    loads_resumed, live_resumed = _count_models(monkeypatch, LlamaForCausalLM)
    assert main([method, str(path)]) == 0
    assert f"resuming from {out / 'checkpoint-2'}" in caplog.text
    # One model per launch: loaded once, and the only one alive when training starts.
    assert loads == loads_resumed == [str(tiny_llama)]
    assert live == live_resumed == [1]

    result = summary(out)
    assert result["steps"] == 4 and result["tokens"] > 0  # ORPO/CPO batches have no input_ids
    assert "Tried to track the number of tokens seen" not in caplog.text
    mlflow_metrics = _mlflow_metrics(store, method)
    for metric in OWN_METRICS[method]:
        assert metric in result["rewards"], (metric, result["rewards"])
        assert metric in (out / "run_report.html").read_text()
        assert metric in mlflow_metrics, (metric, sorted(mlflow_metrics))
    losses = [h["loss"] for h in result["history"] if "loss" in h]
    assert len(losses) == 4 and all(v == v for v in losses), losses
    print(f"{method}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")  # for the closing note
    trained = yaml.safe_load((out / "resolved_config.yaml").read_text())["training_args"]
    if method == "simpo":  # the method's defaults, written once in ENGINE_DEFAULTS
        assert trained["loss_type"] == "simpo" and trained["cpo_alpha"] == 0.0
    if method == "kto":
        preflight = (out / "data_preflight.txt").read_text()
        assert "preference rows unpaired into one desirable and one undesirable example: 96" in (
            preflight
        )
        n_desirable = sum(json.loads(line)["label"] for line in feedback_data.open()) + 96
        assert f"kto examples: {n_desirable} desirable, {24 - n_desirable + 192} undesirable" in (
            preflight
        )

    # The adapter loads in plain transformers + PEFT and changes the model's output.
    final = out / "checkpoint-final"
    assert (final / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([[1, 50, 60, 70]])
    base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(base, final)
    assert not torch.allclose(tuned(ids).logits, base_logits)
