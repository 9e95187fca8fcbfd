"""Trainer callbacks: throughput in the logs, inference-ready tokenizers in checkpoints, and our
MLflow extras (here rather than in ``tracking``, so that planning a run imports no Trainer)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from finetuning.config.data import ChatTemplateName
from finetuning.data.tokenizer import save_for_inference
from finetuning.tracking import RUN_FILE, open_command
from finetuning.train.reporting.logs import readable_logs

logger = logging.getLogger(__name__)


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` to every training log and times the first optimizer step."""

    def __init__(self) -> None:
        self._last_time: float | None = None
        self._last_tokens = 0
        self.first_step_seconds: float | None = None
        self.start_tokens = 0  # tokens seen before this invocation (a resumed run's)

    def on_step_end(self, args, state, control, **kwargs):
        if self.first_step_seconds is None:
            import psutil

            self.first_step_seconds = time.time() - psutil.Process().create_time()

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_time = time.perf_counter()
        self._last_tokens = self.start_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self._last_time is None:
            return
        # transformers' cumulative average beside our rate of the last interval: keep one rate.
        logs.pop("train_tokens_per_second", None)
        if state.log_history:
            state.log_history[-1].pop("train_tokens_per_second", None)
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen
        elapsed = now - self._last_time
        if elapsed > 0 and tokens > self._last_tokens:
            logs["tokens_per_second"] = round((tokens - self._last_tokens) / elapsed, 1)
            if state.log_history:  # the trainer recorded a copy of these logs just before
                state.log_history[-1]["tokens_per_second"] = logs["tokens_per_second"]
        self._last_time, self._last_tokens = now, tokens


class InferenceTokenizerCallback(TrainerCallback):
    """Saves the inference-ready tokenizer into every checkpoint the trainer writes."""

    def __init__(self, tokenizer: Any, template: ChatTemplateName, processor: Any = None):
        self.tokenizer = tokenizer
        self.template = template
        self.processor = processor  # a vision-language model's, saved beside the tokenizer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                save_for_inference(self.tokenizer, self.template, folder, self.processor)


class ReadableProgressCallback(ProgressCallback):
    """transformers' progress bar, with log lines of numbers (``'loss': 5.728``, not ``'5.728'``)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(str(readable_logs(logs)))


def use_readable_progress(handler: Any) -> None:
    """Replace the trainer's default progress callback (if it has one) by the readable one."""
    for i, callback in enumerate(handler.callbacks):
        if type(callback) is ProgressCallback:
            handler.callbacks[i] = ReadableProgressCallback()


class MlflowExtras(TrainerCallback):
    """Logs our params, tags and artifacts into the run transformers' MLflow callback opened.

    Runs after that callback (the trainer adds ours later), on the main process only.
    """

    def __init__(
        self, params: dict[str, str], tags: dict[str, str], artifacts: list[Path], output_dir: Path
    ):
        self.params = params
        self.tags = tags
        self.artifacts = artifacts
        self.output_dir = output_dir
        self.run_id: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import mlflow

        if not state.is_world_process_zero or mlflow.active_run() is None:
            return
        run = mlflow.active_run()
        self.run_id = run.info.run_id
        logger.info(
            "MLflow run %s (experiment id %s); see it with: %s",
            self.run_id,
            run.info.experiment_id,
            open_command(mlflow.get_tracking_uri()),
        )
        (self.output_dir / RUN_FILE).write_text(json.dumps({"run_id": self.run_id}))
        mlflow.set_tags(self.tags)
        items = [(k, v[:6000]) for k, v in self.params.items()]
        try:
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i : i + 100]))
        except mlflow.exceptions.MlflowException as exc:  # e.g. a resumed run with changed values
            logger.warning("MLflow kept the params it had: %s", str(exc).splitlines()[0])
        for path in self.artifacts:
            if path.is_file():
                mlflow.log_artifact(str(path))
