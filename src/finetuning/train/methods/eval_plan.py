"""The evaluation part of the plan: ``eval_conf`` resolved and checked before the model loads.

A generation eval's rows are read with GRPO's strict prompt-row reader, and its metrics are
resolved with GRPO's reward code (:mod:`finetuning.train.methods.reward_loading`): a missing
function, a signature that cannot take what the eval passes, or a row key a metric needs and a
row lacks is a :class:`UserError` naming ``eval_conf.generation[i]``. lm-eval is an optional
extra: without it the plan says how to install it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.config.data import source_labels
from finetuning.config.evaluation import GenerationEvalConfig
from finetuning.data.rows import read_rows
from finetuning.errors import UserError
from finetuning.train.methods.grpo_plan import config_folder
from finetuning.train.methods.reward_loading import RewardCall, resolve_rewards
from finetuning.train.reporting.harness import LM_EVAL_INSTALL

#: The methods whose runs evaluate with ``eval_conf`` (causal LMs trained on chat or text rows).
EVAL_METHODS = ("sft", "pretrain")


@dataclass(frozen=True)
class GenerationEval:
    """A generation eval, resolved: its config, rows and metric callables.

    Attributes:
        config: ``eval_conf.generation[i]``.
        rows: The prompt rows (each with ``_where``, its ``file:line``), ``limit`` applied.
        metrics: The metric functions, called like GRPO's reward functions.
    """

    config: GenerationEvalConfig
    rows: tuple[dict[str, Any], ...]
    metrics: tuple[RewardCall, ...]

    @property
    def name(self) -> str:
        return self.config.name


def resolve_evals(config: Any, config_path: Path | None) -> tuple[GenerationEval, ...]:
    """Read the rows and resolve the metrics of every ``eval_conf.generation`` entry.

    Args:
        config: The experiment config.
        config_path: The config file (relative metric files are read from its folder).

    Raises:
        UserError: A method that does not run these evals, unreadable rows, or a metric that
            cannot be used (naming ``eval_conf.generation[i]``).
    """
    specs = config.eval_conf.generation
    if (specs or config.eval_conf.lm_eval) and config.method not in EVAL_METHODS:
        raise UserError(
            f"eval_conf is supported for {', '.join(EVAL_METHODS)} runs, not {config.method}: "
            "remove eval_conf (evaluate the saved model with a sft config instead)"
        )
    found, labels = [], _source_labels(config.data_conf)
    for i, spec in enumerate(specs):
        where = f"eval_conf.generation[{i}]"
        if spec.name in labels:
            raise UserError(
                f"{where}.name {spec.name!r} is also a validation source's label: their metrics "
                f"(eval_{spec.name}_...) would mix; give the eval another name"
            )
        rows = read_rows(spec.path, "grpo", f"{where}.path")
        if spec.limit is not None:
            rows = rows[: spec.limit]
        rewards = resolve_rewards(
            spec.metrics, config_folder(config_path), rows, where=f"{where}.metrics"
        )
        found.append(GenerationEval(spec, tuple(rows), tuple(RewardCall(r) for r in rewards)))
    return tuple(found)


def _source_labels(data_conf: Any) -> set[str]:
    """The labels per-source validation metrics are named by."""
    valid = data_conf.validation_data
    datasets = valid.datasets if valid.type == "CONCATENATION" else data_conf.training_data.datasets
    return set(source_labels(datasets))


def check_prompts(evals: tuple[GenerationEval, ...], tokenizer: Any, settings: Any) -> None:
    """Render every eval prompt with the run's template now, not at the first evaluation.

    Raises:
        UserError: Rows the template cannot render (``file:line`` and why), all of them at once.
    """
    from finetuning.data.encode import encode_each
    from finetuning.data.prompts import prompt_ids

    rows = [row for e in evals for row in e.rows]
    encode_each(rows, lambda row: prompt_ids(row, tokenizer, settings), "eval_conf.generation")


def lm_eval_problems(config: Any) -> list[str]:
    """What this machine lacks for ``eval_conf.lm_eval`` (empty when it is not asked for)."""
    if config.eval_conf.lm_eval is None or importlib.util.find_spec("lm_eval") is not None:
        return []
    return [LM_EVAL_INSTALL]


def lines(config: Any, evals: tuple[GenerationEval, ...]) -> list[str]:
    """The evaluation lines of the printed plan."""
    out = []
    for e in evals:
        metrics = ", ".join(f"{m.reward.name} ({m.reward.source})" for m in e.metrics)
        decoding = f"temperature {e.config.temperature}" if e.config.temperature else "greedy"
        out.append(
            f"generation eval {e.name}: {len(e.rows)} rows of {e.config.path}, up to "
            f"{e.config.max_new_tokens} new tokens, {decoding}; metrics {metrics}; logged as "
            f"eval_{e.name}_<metric>"
        )
    lm = config.eval_conf.lm_eval
    if lm is not None:
        out.append(
            f"lm-eval: tasks {', '.join(lm.tasks)} on the final model"
            + (f" (include_path {lm.include_path})" if lm.include_path else "")
        )
    return out
