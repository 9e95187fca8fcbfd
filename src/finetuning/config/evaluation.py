"""``eval_conf``: generation evals during and after training, and lm-eval tasks (pure data).

A generation eval's ``metrics`` are specified exactly like ``grpo_args.rewards`` (the same
built-ins, ``package.module:function`` or ``path/to/file.py:function``); the plan resolves and
checks them with GRPO's code (``finetuning.train.methods.reward_loading``) before the model
loads. See docs/evaluating.md.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from finetuning.config.data import LABEL_PATTERN
from finetuning.config.grpo import RewardSpec
from finetuning.config.strict import StrictModel


class GenerationEvalConfig(StrictModel):
    """One generation eval: answer each prompt row, score the answers with metric functions."""

    name: str = Field(pattern=LABEL_PATTERN)
    """The eval's name: its metrics are logged as ``eval_<name>_<metric>`` and its completions
    written to ``evals/<name>-step-<N>.jsonl`` in the output dir."""
    path: str
    """A JSONL file of GRPO prompt rows: ``{"prompt_messages": [...], "answer": ..., ...}``
    (every other key is passed to the metric functions, as GRPO passes it to rewards); a
    relative path resolves against the current directory."""
    metrics: list[RewardSpec] = Field(min_length=1)
    """The metric functions, specified like ``grpo_args.rewards`` (function, weight, kwargs,
    name); each is averaged over the rows (None values are left out). ``weight`` weighs the
    metric in ``eval_<name>_score``, the weighted sum of the means."""
    max_new_tokens: int = Field(default=128, ge=1)
    """The most tokens generated per answer (generation also stops at the template's end of
    turn)."""
    temperature: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """Sampling temperature; None or 0: greedy decoding (reproducible: `finetuning eval` on the
    same checkpoint gives the same numbers)."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate only the first this many rows (None: all)."""


class LmEvalConfig(StrictModel):
    """EleutherAI lm-evaluation-harness tasks, run on the final model and by `finetuning eval`."""

    tasks: list[str] = Field(min_length=1)
    """Task (or group) names as lm-eval knows them, e.g. ``hellaswag`` or a task of
    ``include_path``."""
    num_fewshot: int | None = Field(default=None, ge=0)
    """Few-shot examples per prompt (None: each task's default)."""
    limit: float | None = Field(default=None, gt=0)
    """Rows per task: a count (>= 1) or a fraction (< 1); None: all."""
    include_path: str | None = None
    """A folder of extra task YAML files (your own tasks, with local data)."""
    batch_size: int = Field(default=1, ge=1)
    """lm-eval's batch size."""


class EvalConfig(StrictModel):
    """Evaluations beyond the validation loss (docs/evaluating.md)."""

    generation: list[GenerationEvalConfig] = Field(default_factory=list)
    """Generation evals, run at every evaluation (``training_args.eval_strategy``) and by
    `finetuning eval`."""
    lm_eval: LmEvalConfig | None = None
    """lm-eval tasks, run once on the final model after training and by `finetuning eval`
    (needs the optional extra: ``pip install 'finetuning[lm-eval]'``)."""

    @model_validator(mode="after")
    def _check_names(self) -> EvalConfig:
        seen: set[str] = set()
        for i, g in enumerate(self.generation):
            if g.name in seen:
                raise ValueError(
                    f"generation[{i}].name {g.name!r} is used twice: names must differ"
                )
            seen.add(g.name)
        return self
