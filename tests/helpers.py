"""Helpers for tests: minimal configs and running the CLI in-process or as a subprocess."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def minimal_sft(model: str | Path = "/m", data: str | Path = "/d.jsonl", **sections) -> dict:
    """A small valid SFT config dict; keyword arguments replace whole sections."""
    config: dict[str, Any] = {
        "data_conf": {
            "training_data": {"type": "CONCATENATION", "datasets": [{"path": str(data)}]},
            "validation_data": {"type": "NONE"},
            "chat_template_name": "chat-ml",
        },
        "training_args": {"learning_rate": 1e-3},
        "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(model)},
        "sft_args": {"max_seq_length": 128},
    }
    config.update(copy.deepcopy(sections))
    return config


def minimal_dpo(model: str | Path = "/m", data: str | Path = "/d.jsonl", **sections) -> dict:
    """A small valid DPO config dict."""
    config = minimal_sft(model, data, **sections)
    config.pop("sft_args")
    config["method"] = "dpo"
    config.update(copy.deepcopy(sections))
    return config


def minimal_reward(model: str | Path = "/m", data: str | Path = "/d.jsonl", **sections) -> dict:
    """A small valid reward-model config dict (DPO's shape, ``method: reward``)."""
    config = minimal_dpo(model, data, **sections)
    config["method"] = "reward"
    return config


def minimal_pretrain(model: str | Path = "/m", data: str | Path = "/d.jsonl", **sections) -> dict:
    """A small valid continued-pretraining config dict (raw text, no chat template)."""
    config = minimal_sft(model, data)
    config["method"] = "pretrain"
    del config["data_conf"]["chat_template_name"]
    config.update(copy.deepcopy(sections))
    return config


#: The minimal config builder of each method.
MINIMAL = {
    "sft": minimal_sft,
    "dpo": minimal_dpo,
    "reward": minimal_reward,
    "pretrain": minimal_pretrain,
}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env=None):
    """Run `python -m finetuning ARGS` in a subprocess; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "finetuning", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


def losses(output_dir: Path) -> list[float]:
    """Training losses the run logged, in order (from run_summary.json)."""
    summary = json.loads((output_dir / "run_summary.json").read_text())
    return [h["loss"] for h in summary["history"] if "loss" in h]


def summary(output_dir: Path) -> dict:
    """The run_summary.json a run wrote."""
    return json.loads((output_dir / "run_summary.json").read_text())


def record_trainer_batches(monkeypatch) -> list[dict[str, Any]]:
    """Record (copies of) every batch the transformers Trainer computes a loss on."""
    from transformers import Trainer

    seen: list[dict[str, Any]] = []
    original = Trainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        # The collator's batch also holds plain ints (max_length_q/k): copy only the tensors.
        seen.append({k: v.clone() if hasattr(v, "clone") else v for k, v in inputs.items()})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(Trainer, "compute_loss", spy)
    return seen


def sigterm_at_step(monkeypatch, step: int) -> None:
    """Make the next in-process run send itself SIGTERM when optimizer step ``step`` ends.

    The engine's own handler (``train/interrupts.py``) then finishes the step, saves a checkpoint
    and stops with ``EXIT_PREEMPTED``, as it does for a scheduler's SIGTERM; only the sender is
    the test. Pair it with ``finetuning.cli.main([...])`` to test preemption and resume without
    paying a subprocess start for each launch.
    """
    import os
    import signal

    from transformers import TrainerCallback

    from finetuning.train import stages

    class _Sigterm(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step - 1:  # the signal lands during step ``step``
                os.kill(os.getpid(), signal.SIGTERM)

    original = stages.callbacks

    def with_sigterm(ctx):
        found = original(ctx)
        return dataclasses.replace(found, all=(*found.all, _Sigterm()))

    monkeypatch.setattr(stages, "callbacks", with_sigterm)
