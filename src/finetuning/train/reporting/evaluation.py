"""Evaluation beyond one ``eval_loss``: per-source losses, generation evals, lm-eval tasks.

During training, :class:`EvalCallback` runs at every evaluation the Trainer makes: the
per-source validation losses (``eval_<source>_loss``, through the Trainer's own multi-dataset
evaluation: ``trainer.evaluate(eval_dataset={source: dataset, ...})``) and every generation eval
of ``eval_conf.generation`` (``eval_<name>_<metric>``, completions to
``evals/<name>-step-<N>.jsonl``); at the end of training it runs ``eval_conf.lm_eval`` on the
final weights (:mod:`finetuning.train.reporting.harness`).
:mod:`finetuning.train.reporting.checkpoint_eval` runs the same evaluations on a loaded
checkpoint (`finetuning eval`). See docs/evaluating.md.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from finetuning.data.prompts import prompt_ids, reward_columns
from finetuning.data.stop_tokens import stop_ids
from finetuning.errors import UserError
from finetuning.train.safety.writes import atomic_write_text, atomic_writer

logger = logging.getLogger(__name__)


def _generate_one(model: Any, ids: list[int], spec: Any, stops: list[int], pad: Any) -> list[int]:
    """The completion ids of one prompt (greedy unless the eval sets a temperature)."""
    import torch

    device = next(model.parameters()).device
    inputs = torch.tensor([ids], device=device)
    sample = bool(spec.temperature)
    kwargs: dict[str, Any] = {
        "max_new_tokens": spec.max_new_tokens,
        "do_sample": sample,
        "eos_token_id": stops,
        "pad_token_id": pad if pad is not None else stops[0],
    }
    if sample:
        kwargs["temperature"] = spec.temperature
    else:  # the model's saved generation config may sample; an eval must not unless asked
        kwargs.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        out = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), **kwargs)
    completion = out[0, len(ids) :].tolist()
    for k, token in enumerate(completion):
        if token in stops:
            return completion[: k + 1]
    return completion


def _score(geval: Any, rows: list[dict], prompts: list[str], completions: list[str], ids, state):
    """Each metric's values for the completions (GRPO's reward call: row keys by name)."""
    columns: dict[str, list[Any]] = {}
    keys = {k for r in rows for k in reward_columns(r) if k != "prompt_messages"}
    for key in sorted(keys):
        columns[key] = [r.get(key) for r in rows]
    where = [r.get("_where", "") for r in rows]
    try:
        return {
            m.reward.name: m(
                prompts,
                completions,
                completion_ids=ids,
                trainer_state=state,
                _where=where,
                **columns,
            )
            for m in geval.metrics
        }
    except UserError as exc:  # GRPO's words, with this eval's name in the header
        raise type(exc)(
            exc.problems,
            header=f"a metric of the generation eval {geval.name!r} failed (fix the function "
            "or the data row):",
        ) from None


def run_generation_eval(
    geval: Any,
    model: Any,
    tokenizer: Any,
    settings: Any,
    state: Any = None,
    rank: int = 0,
    world: int = 1,
    gather: Callable[[list], list] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Generate for every row of one eval and score the completions.

    Args:
        geval: A resolved generation eval (:class:`finetuning.train.methods.eval_plan.GenerationEval`).
        model: The model (eval mode is set here and the previous mode restored).
        tokenizer: The training tokenizer (template tokens, pad token).
        settings: The run's encode settings (the template the prompts are rendered with).
        state: The trainer state passed to metric functions (None outside training).
        rank, world: This process and the number of processes: rows ``rank::world`` are
            generated here.
        gather: Collects every process's records (``accelerate.utils.gather_object``).

    Returns:
        (``{"eval_<name>_<metric>": mean, ..., "eval_<name>_score": weighted sum}``, the
        records ``{"row", "where", "prompt_messages", "completion", "scores"}`` in row order).

    Raises:
        RewardFailed: A metric raised: the error names it, the row (file:line) and completion.
    """
    stops, pad = stop_ids(tokenizer, settings.template)
    stops = stops or [tokenizer.eos_token_id]
    mine = list(range(len(geval.rows)))[rank::world]
    was_training = model.training
    model.eval()
    try:
        prompts, completions, ids = [], [], []
        for i in mine:
            prompt = prompt_ids(geval.rows[i], tokenizer, settings)
            out = _generate_one(model, prompt, geval.config, stops, pad)
            prompts.append(tokenizer.decode(prompt))
            completions.append(tokenizer.decode(out, skip_special_tokens=True).strip())
            ids.append(out)
    finally:
        model.train(was_training)
    rows = [geval.rows[i] for i in mine]
    scores = _score(geval, rows, prompts, completions, ids, state) if rows else {}
    records = [
        {
            "row": i,
            "where": geval.rows[i].get("_where", ""),
            "prompt_messages": geval.rows[i].get("prompt_messages"),
            "answer": geval.rows[i].get("answer"),
            "completion": completions[k],
            "scores": {name: values[k] for name, values in scores.items()},
        }
        for k, i in enumerate(mine)
    ]
    if gather is not None and world > 1:
        records = sorted(gather(records), key=lambda r: r["row"])
    return _means(geval, records), records


def _means(geval: Any, records: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of each metric over the rows it applies to, and the weighted score."""
    out: dict[str, float] = {}
    score = 0.0
    for m in geval.metrics:
        values = [r["scores"][m.reward.name] for r in records]
        values = [float(v) for v in values if v is not None]
        mean = sum(values) / len(values) if values else math.nan
        out[f"eval_{geval.name}_{m.reward.name}"] = mean
        score += m.reward.weight * (0.0 if math.isnan(mean) else mean)
    out[f"eval_{geval.name}_score"] = score
    return out


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write an eval's completions with their scores, one JSON object a line (atomically)."""
    with atomic_writer(path) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
    return path


def source_losses(trainer: Any, datasets: dict[str, Any]) -> dict[str, float]:
    """``eval_<source>_loss`` for each source: the Trainer's multi-dataset evaluation."""
    if not datasets:
        return {}
    metrics = trainer.evaluate(eval_dataset=datasets)
    return {k: v for k, v in metrics.items() if k.endswith("_loss")}


class EvalCallback(TrainerCallback):
    """Per-source losses and generation evals at each evaluation; lm-eval at the end.

    Args:
        trainer: The trainer (its ``evaluate`` runs the per-source datasets).
        parts: Source label -> that source's validation dataset (two sources or more).
        evals: The plan's resolved generation evals.
        tokenizer: The training tokenizer.
        settings: The run's encode settings.
        output_dir: Where ``evals/`` is written.
        lm_config: ``eval_conf.lm_eval`` or None.
    """

    def __init__(self, trainer, parts, evals, tokenizer, settings, output_dir, lm_config=None):
        self.trainer = trainer
        self.parts = parts
        self.evals = evals
        self.tokenizer = tokenizer
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.lm_config = lm_config
        self._inside = False
        self.written: list[Path] = []

    def on_evaluate(self, args, state, control, **kwargs):
        if self._inside:  # the per-source evaluations below report here too
            return control
        self._inside = True
        try:
            found = source_losses(self.trainer, self.parts)  # logged by the Trainer itself
            found.update(self._generation(state))
        finally:
            self._inside = False
        # Into the evaluation's own metrics, so metric_for_best_model may name one of them.
        metrics = kwargs.get("metrics")
        if isinstance(metrics, dict):
            metrics.update(found)
        return control

    def _generation(self, state: Any) -> dict[str, float]:
        if not self.evals:
            return {}
        from accelerate.utils import gather_object

        acc = self.trainer.accelerator
        rank, world = acc.process_index, acc.num_processes
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        for geval in self.evals:
            means, records = run_generation_eval(
                geval,
                self.trainer.model,
                self.tokenizer,
                self.settings,
                state,
                rank,
                world,
                gather_object,
            )
            metrics.update(means)
            if acc.is_main_process:
                path = self.output_dir / "evals" / f"{geval.name}-step-{state.global_step}.jsonl"
                self.written.append(write_records(path, records))
                _log_artifact(path)
        metrics["eval_generation_runtime"] = round(time.perf_counter() - started, 3)
        self.trainer.log(metrics)
        return metrics

    def on_train_end(self, args, state, control, **kwargs):
        if self.lm_config is None:
            return control
        from finetuning.train.reporting.harness import run_lm_eval

        results = run_lm_eval(self.trainer.model, self.tokenizer, self.lm_config)
        if self.trainer.accelerator.is_main_process:
            path = self.output_dir / "eval_results.json"
            atomic_write_text(
                path, json.dumps({"step": state.global_step, "metrics": results}, indent=2) + "\n"
            )
            _log_artifact(path)
        self.trainer.log(results)
        return control


def _log_artifact(path: Path) -> None:
    """Log a file into the active MLflow run (the trainer's), if one is open."""
    import sys

    mlflow = sys.modules.get("mlflow")  # only when the run tracks with MLflow
    if mlflow is None or mlflow.active_run() is None:
        return
    try:
        mlflow.log_artifact(str(path), artifact_path="evals")
    except Exception as exc:  # tracking must not stop training
        logger.warning("could not log %s to MLflow: %s", path, exc)


def attach(ctx: Any, trainer: Any, dataset: Callable[[Any], Any]) -> EvalCallback | None:
    """Add the evaluation callback to ``trainer`` when the run evaluates beyond eval_loss.

    Args:
        ctx: The run (:class:`finetuning.train.stages.RunContext`).
        trainer: The trainer, already built.
        dataset: Turns an encoded split into the trainer's dataset type.
    """
    plan = ctx.plan
    data, evals = plan.data, plan.evals
    lm_config = plan.config.eval_conf.lm_eval
    evaluates = plan.config.training_args.get("eval_strategy", "no") != "no"
    parts = {k: dataset(v) for k, v in data.valid_parts.items()} if evaluates else {}
    if not parts and not evals and lm_config is None:
        return None
    callback = EvalCallback(
        trainer, parts, evals, plan.setup.tokenizer, plan.settings, plan.output_dir, lm_config
    )
    # First, so lm-eval's metrics at the end reach MLflow before its callback ends the run.
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback
