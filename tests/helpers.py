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


def minimal_grpo(model: str | Path = "/m", data: str | Path = "/d.jsonl", **sections) -> dict:
    """A small valid GRPO config dict (exact_answer reward, 2 prompts x 2 generations a step)."""
    config = minimal_sft(model, data)
    config.pop("sft_args")
    config["method"] = "grpo"
    config["training_args"] = {
        "learning_rate": 1e-3, "num_generations": 2, "max_completion_length": 8,
    }  # fmt: skip
    config["grpo_args"] = {"rewards": [{"function": "exact_answer"}]}
    config["batchsize_conf"] = {"total_train_batch_size": 2, "max_per_device_train_batch_size": 4}
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
    "grpo": minimal_grpo,
    # KTO accepts DPO rows (unpaired); ORPO and SimPO take them as they are.
    **{m: (lambda m=m: {**minimal_dpo(), "method": m}) for m in ("kto", "orpo", "simpo")},
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


def run_main(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None):
    """Run `finetuning ARGS` in this process, as `python -m finetuning ARGS` would; returns a
    CompletedProcess (returncode, stdout, stderr).

    For tests that are not about a process: it skips the ~10 s of imports each subprocess pays.
    The console is the real one (the CLI's own logging setup writes to the captured stderr), and
    what a run changes in the process is put back afterwards: the environment (tracking, full
    determinism), the working directory, the logging handlers and levels, the warning filters and
    torch's deterministic-algorithms switch.
    """
    import contextlib
    import io
    import logging
    import os
    import warnings

    import torch
    from transformers.utils import logging as hf_logging

    from finetuning.cli import main

    hf_logging.get_logger("transformers")  # creates transformers' own handler now, not mid-run

    argv = list(map(str, args))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("transformers", "finetuning")}
    environ, old_cwd = dict(os.environ), os.getcwd()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    tracking = _mlflow_globals()
    stdout, stderr = io.StringIO(), io.StringIO()
    # Without handlers on the root logger, the CLI's logging.basicConfig installs its own (as in a
    # fresh process); pytest's capture handlers come back afterwards.
    root.handlers = []
    # transformers logs through a handler of its own, bound to the stderr of its import.
    streams = [
        (h, h.stream)
        for h in logging.getLogger("transformers").handlers
        if isinstance(h, logging.StreamHandler)
    ]
    try:
        for handler, _ in streams:
            handler.setStream(stderr)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
        ):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help, usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = handlers, level
        for handler, stream in streams:
            handler.setStream(stream)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(environ)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        _restore_mlflow_globals(tracking)
    return subprocess.CompletedProcess(
        ["finetuning", *argv], code, stdout.getvalue(), stderr.getvalue()
    )


def _mlflow_globals() -> tuple[Any, Any] | None:
    """MLflow's process-wide tracking URI and experiment (transformers' callback sets both)."""
    if "mlflow" not in sys.modules:
        return None
    from mlflow.tracking import _tracking_service, fluent

    return _tracking_service.utils._tracking_uri, fluent._active_experiment_id


def _restore_mlflow_globals(saved: tuple[Any, Any] | None) -> None:
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking import _tracking_service, fluent

    while mlflow.active_run() is not None:  # a run that raised may have left one open
        mlflow.end_run()
    _tracking_service.utils._tracking_uri, fluent._active_experiment_id = saved or (None, None)


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

    The engine's own handler (``train/safety/interrupts.py``) then finishes the step, saves a checkpoint
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
