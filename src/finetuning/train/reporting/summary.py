"""The end-of-run summary, and the output-directory check done before training starts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetuning.errors import UserError
from finetuning.model import attention

#: GRPO's metrics besides ``rewards/<function>/mean|std``, kept in :attr:`RunSummary.rewards`.
GRPO_METRICS = ("reward", "reward_std", "kl", "completions/mean_length")


@dataclass
class RunSummary:
    """What a finished run did.

    Attributes:
        steps: Optimizer steps at the end (including resumed ones).
        seconds: Wall time of this invocation.
        tokens: Input tokens seen (non-padding).
        tokens_per_second: Over the training time of this invocation.
        train_loss: The last logged training loss.
        eval_loss: The last evaluation loss, if any.
        final_dir: Where the final model (or adapter) and tokenizer are.
        history: The trainer's log history.
        rewards: Method metrics of the last training log: ``rewards/*`` (accuracy, margin,
            ...), the preference methods' own (:data:`METHOD_METRICS`: KTO's ``kl``, ORPO's
            ``log_odds_ratio``, ...), a reward model's (:data:`REWARD_MODEL_METRICS`) and GRPO's
            (:data:`GRPO_METRICS`; mean and std per reward function, total reward and its std,
            KL, completion length).
        first_step_seconds: From process start to the end of the first optimizer step.
        attention: The attention kernels that ran (e.g. "per-example sdpa"); empty when none of
            ours was used and transformers' own implementation ran.
        evaluations: The last value of each evaluation metric beyond ``eval_loss``: per-source
            losses (``eval_<source>_loss``), generation evals (``eval_<name>_<metric>``) and
            lm-eval results (``lm_eval/<task>/<metric>``); see docs/evaluating.md.
    """

    steps: int
    seconds: float
    tokens: int
    tokens_per_second: float
    train_loss: float | None
    eval_loss: float | None
    final_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=dict)
    first_step_seconds: float | None = None
    attention: list[str] = field(default_factory=list)
    evaluations: dict[str, float] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """Write the summary and the log history as JSON (for scripts and the run report)."""
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        """The summary a finished run wrote with :meth:`write`."""
        data = json.loads(path.read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        summary = cls(**{k: v for k, v in data.items() if k in names})
        summary.final_dir = Path(summary.final_dir)
        return summary

    def format(self) -> str:
        first = (
            f"; first optimizer step {self.first_step_seconds:.1f}s after the command started"
            if self.first_step_seconds is not None
            else ""
        )
        losses = [
            f"{name}: {value:.4f}"
            for name, value in (
                ("final train loss", self.train_loss),
                ("eval loss", self.eval_loss),
            )
            if value is not None
        ]
        lines = [
            "run summary:",
            f"  steps: {self.steps}; time: {self.seconds:.1f}s{first}",
            f"  tokens: {self.tokens} ({self.tokens_per_second:.0f} tokens/s)",
            *([f"  {'; '.join(losses)}"] if losses else []),
            *self._reward_lines(),
            *([f"  attention: {', '.join(self.attention)}"] if self.attention else []),
            f"  outputs: {self.final_dir}",
        ]
        return "\n".join(lines)

    def _reward_lines(self) -> list[str]:
        """The preference metrics, or GRPO's mean reward (per function), its std and KL."""
        r = self.rewards
        if "reward" not in r:
            return _method_line(r)
        functions = ", ".join(
            f"{key[len('rewards/') : -len('/mean')]} {_fmt(value)}"
            for key, value in r.items()
            if key.startswith("rewards/") and key.endswith("/mean")
        )
        return [
            f"  reward (last step): mean {_fmt(r['reward'])}, std {_fmt(r.get('reward_std'))}, "
            f"KL {_fmt(r.get('kl'))}; per function: {functions}"
        ]


#: Training metrics of the preference methods besides ``rewards/*`` that the summary keeps (as
#: TRL 1.16 logs them): KTO's KL estimate, ORPO's log-odds terms, ORPO's / CPO's NLL term.
METHOD_METRICS = ("kl", "log_odds_ratio", "log_odds_chosen", "nll_loss")


#: What TRL's RewardTrainer logs (chosen-above-rejected share, mean score gap, score range).
REWARD_MODEL_METRICS = ("accuracy", "margin", "min_reward", "mean_reward", "max_reward")


def _first(values: dict[str, float], *keys: str) -> float | None:
    return next((values[k] for k in keys if k in values), None)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _method_line(rewards: dict[str, float]) -> list[str]:
    """``rewards: accuracy ..., margin ...`` plus the method's own metrics that were logged."""
    if not rewards:
        return []
    # A reward model logs ``accuracy``/``margin``; the preference methods ``rewards/*``.
    found = [
        (name, _first(rewards, f"rewards/{plural}", name))
        for name, plural in (("accuracy", "accuracies"), ("margin", "margins"))
    ]
    parts = [
        f"{name} {value:.4f}"
        for name, value in found
        if value is not None  # KTO logs no accuracy: its examples are unpaired
    ]
    parts += [f"{key} {rewards[key]:.4f}" for key in METHOD_METRICS if key in rewards]
    return [f"  rewards: {', '.join(parts)}"]


#: Per-evaluation bookkeeping the Trainer logs beside each metric (not results).
_EVAL_BOOKKEEPING = ("_runtime", "_samples_per_second", "_steps_per_second")


def evaluation_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
    """The last value of every evaluation metric except ``eval_loss`` (docs/evaluating.md)."""
    found: dict[str, float] = {}
    for entry in history:
        for key, value in entry.items():
            is_eval = key.startswith("eval_") and key != "eval_loss"
            if (is_eval and not key.endswith(_EVAL_BOOKKEEPING)) or key.startswith("lm_eval/"):
                found[key] = value
    return found


def summarize(
    trainer: Any, result: Any, throughput: Any, final_dir: Path, seconds: float
) -> RunSummary:
    """Build the summary from the trainer state after training."""
    history = list(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    runtime = result.metrics.get("train_runtime") or seconds
    tokens = int(trainer.state.num_input_tokens_seen)
    # A resumed run's rate counts only the tokens this invocation trained on.
    trained = tokens - int(getattr(throughput, "start_tokens", 0) or 0)
    return RunSummary(
        steps=int(trainer.state.global_step),
        seconds=seconds,
        tokens=tokens,
        tokens_per_second=trained / runtime if runtime else 0.0,
        train_loss=losses[-1] if losses else None,
        eval_loss=evals[-1] if evals else None,
        final_dir=final_dir,
        history=history,
        first_step_seconds=throughput.first_step_seconds,
        attention=attention.kernels_ran(),
        evaluations=evaluation_metrics(history),
        rewards={
            key: value
            for entry in history
            if "loss" in entry
            for key, value in entry.items()
            if key.startswith("rewards/")
            or key in GRPO_METRICS
            or key in METHOD_METRICS
            or key in REWARD_MODEL_METRICS
        },
    )


def finished_run(
    output_dir: Path, resume: str | None, final_dir: Path, config_data: dict[str, Any]
) -> RunSummary | None:
    """The summary of the run in ``output_dir`` when it is complete, else None.

    Complete means: the checkpoint to resume from reached its last step, the final model and
    the summary of that step are there, and the resolved config is the one that run wrote (a
    changed config, e.g. more epochs, resumes and trains as before).
    """
    if resume is None:
        return None
    try:
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        summary = RunSummary.read(output_dir / "run_summary.json")
        stored = yaml.safe_load((output_dir / "resolved_config.yaml").read_text())
    except (OSError, ValueError, TypeError, yaml.YAMLError):
        return None
    step, last = state.get("global_step", 0), state.get("max_steps", 0)
    done = 0 < last <= step and summary.steps == step and final_dir.is_dir()
    same_config = stored == yaml.safe_load(yaml.safe_dump(config_data, sort_keys=False))
    return summary if done and same_config else None


def estimated_checkpoint_bytes(model: str, full_parameter: bool) -> int:
    """A lower bound of one checkpoint's size: the weights, plus two Adam moments when full."""
    folder = Path(model)
    if not folder.is_dir():
        return 0
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin")
    )
    return weights * 3 if full_parameter else weights // 10


def check_output_dir(output_dir: Path, needed_bytes: int = 0) -> None:
    """Fail when ``output_dir`` could not be created and written, without creating anything.

    The nearest folder that exists (``output_dir`` itself, or the parent it would be created
    in) must be a writable folder with room for one checkpoint.

    Raises:
        UserError: A file is in the way, the folder is not writable, or its disk is too full.
    """
    existing = output_dir.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"training_args.output_dir: cannot write to {output_dir}: {existing} is not a "
            "folder (set output_dir or $CHECKPOINTS_PATH to a writable folder)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(
            f"training_args.output_dir: cannot write to {output_dir}: {existing} is not "
            "writable (set output_dir or $CHECKPOINTS_PATH to a writable folder)"
        )
    _check_room(output_dir, existing, needed_bytes)


def _check_room(output_dir: Path, existing: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(existing).free
    if needed_bytes and free < needed_bytes:
        raise UserError(
            f"training_args.output_dir: {output_dir} has {free / 2**30:.1f} GiB free, but one "
            f"checkpoint needs about {needed_bytes / 2**30:.1f} GiB: free space or choose another folder"
        )


def check_writable(output_dir: Path, needed_bytes: int = 0) -> None:
    """Fail before training when ``output_dir`` cannot be written or has no room for a checkpoint.

    Raises:
        UserError: The folder cannot be created or written to, or its disk has less free space
            than one checkpoint needs.
    """
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise UserError(
            f"training_args.output_dir: cannot write to {output_dir}: {exc.strerror or exc} "
            "(set output_dir or $CHECKPOINTS_PATH to a writable folder)"
        ) from None
    if not os.access(output_dir, os.W_OK):  # pragma: no cover - caught above on most systems
        raise UserError(f"training_args.output_dir: {output_dir} is not writable")
    _check_room(output_dir, output_dir, needed_bytes)
