"""The console: known-harmless library noise filtered (shown with DEBUG), log lines of numbers with
one rate, the resume-steps warning only for real differences, global options on both sides."""

from __future__ import annotations

import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from finetuning.cli import build_parser
from tests.helpers import run_cli

EMIT = """
import logging, sys, warnings
from finetuning.console import setup_logging
setup_logging(sys.argv[1])
logging.getLogger("transformers.modeling_utils").warning(
    "The new embeddings will be initialized ... To disable this, use `mean_resizing=False`")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: x. Please make sure you "
    "already `pip install kernels` and the kernels >= 0.11.1")
warnings.warn("The `'keep_end'` truncation mode is deprecated and will be removed", FutureWarning)
warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
logging.getLogger("transformers.modeling_utils").warning("a real problem")
"""


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_known_harmless_library_messages_are_filtered_unless_debug(level):
    result = subprocess.run(
        [sys.executable, "-c", EMIT, level], capture_output=True, text=True, check=True
    )
    noise = ["mean_resizing", "pip install kernels", "keep_end", "is_gradient_checkpointing"]
    shown = [text for text in noise if text in result.stderr]
    assert shown == (noise if level == "DEBUG" else []), result.stderr
    assert "a real problem" in result.stderr


def test_log_lines_are_numbers_with_one_rate():
    from finetuning.train.reporting.callbacks import ReadableProgressCallback, ThroughputCallback

    written = []
    progress = ReadableProgressCallback()
    progress.training_bar = SimpleNamespace(write=written.append)
    state = SimpleNamespace(is_world_process_zero=True, num_input_tokens_seen=100, log_history=[])
    throughput = ThroughputCallback()
    throughput.on_train_begin(None, state, None)
    state.num_input_tokens_seen = 4893
    logs = {"loss": 5.72811, "learning_rate": 0.0019971234, "epoch": 0.08403361,
            "num_input_tokens_seen": 4893, "train_tokens_per_second": 822.6, "total_flos": 1.0}  # fmt: skip
    state.log_history.append(dict(logs))
    throughput.on_log(None, state, None, logs=logs)
    progress.on_log(None, state, None, logs=logs)
    (line,) = written
    assert line.startswith("{'loss': 5.728, 'learning_rate': 0.001997, 'epoch': 0.08403,"), line
    assert "'num_input_tokens_seen': 4893" in line and "'tokens_per_second': " in line
    assert "train_tokens_per_second" not in line and "total_flos" not in line
    assert "train_tokens_per_second" not in state.log_history[-1]


def _warning(*lines: str) -> logging.LogRecord:
    header = "Warning: The following arguments do not match the ones in the `trainer_state.json`"
    msg = "\n\t".join([header, *lines])
    return logging.LogRecord("transformers.trainer_utils", logging.WARNING, "", 0, msg, None, None)


def test_resume_steps_warning_only_for_values_that_differ():
    from finetuning.train.reporting.logs import SameStepsFilter

    same = SameStepsFilter(lambda: 119)
    agree = [
        "eval_steps: 0.25 (from args) != 30 (from trainer_state.json)",
        "save_steps: 0.5 (from args) != 60 (from trainer_state.json)",
    ]
    assert same.filter(_warning(*agree)) is False
    record = _warning(*agree, "logging_steps: 5 (from args) != 10 (from trainer_state.json)")
    assert same.filter(record) is True
    assert "logging_steps: 5" in record.msg and "eval_steps" not in record.msg
    assert same.filter(_warning("eval_steps: 0.5 (from args) != 30 (from trainer_state.json)"))


def test_resumed_run_rate_counts_only_the_resumed_tokens():
    from pathlib import Path

    from finetuning.train.reporting.summary import summarize

    trainer = SimpleNamespace(
        state=SimpleNamespace(log_history=[], num_input_tokens_seen=56217, global_step=119)
    )
    result = SimpleNamespace(metrics={"train_runtime": 10.0})
    throughput = SimpleNamespace(start_tokens=56000, first_step_seconds=None)
    summary = summarize(trainer, result, throughput, Path("/f"), 11.0)
    assert summary.tokens == 56217 and summary.tokens_per_second == pytest.approx(21.7)
    text = summary.format()
    assert "n/a" not in text and "None" not in text and "loss" not in text


def test_global_options_after_the_subcommand_and_in_its_help():
    after = build_parser().parse_args(
        ["sft", "c.yaml", "--mlflow-server-uri", "X", "--logging-level", "debug",
         "--experiment-name", "e", "--num-preprocess-workers", "2"]
    )  # fmt: skip
    assert (after.mlflow_server_uri, after.logging_level, after.experiment_name) == (
        "X",
        "DEBUG",
        "e",
    )
    assert after.num_preprocess_workers == 2
    before = build_parser().parse_args(["--mlflow-server-uri", "Y", "validate", "c.yaml"])
    assert before.mlflow_server_uri == "Y" and before.logging_level == "INFO"
    default = build_parser().parse_args(["dpo", "c.yaml"])
    assert default.mlflow_server_uri is None and default.hf_mlflow_log_artifacts is None
    help_text = run_cli("sft", "--help").stdout
    for option in ("--mlflow-server-uri", "--logging-level", "--experiment-name"):
        assert option in help_text
