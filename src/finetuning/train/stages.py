"""The stages both recipes share, as plain functions: start, model, callbacks, train-and-save.

Each recipe (``sft.run``, ``dpo.run``) starts from the plan (:mod:`finetuning.train.plan`, the
same one `finetuning validate` builds), then calls these in order and adds only what is its own:
the collator and dataset, the trainer class and, for DPO, the reference model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import yaml

from finetuning import __version__
from finetuning.config.loading import LoadedConfig, resolved_dict
from finetuning.data.tokenizer import save_for_inference
from finetuning.errors import UserError
from finetuning.model.loading import (
    apply_adapter,
    check_quantized_vocabulary,
    load_model,
    resize_for_tokenizer,
)
from finetuning.tracking import (
    export_tracking,
    flatten,
    log_final_artifacts,
    mixture_params,
    open_command,
)
from finetuning.train import arguments
from finetuning.train.plan import Plan, build_plan
from finetuning.train.reporting.callbacks import (
    InferenceTokenizerCallback,
    MlflowExtras,
    ThroughputCallback,
    use_readable_progress,
)
from finetuning.train.reporting.logs import SameStepsFilter
from finetuning.train.reporting.report import write_report
from finetuning.train.reporting.summary import (
    RunSummary,
    check_writable,
    finished_run,
    summarize,
)
from finetuning.train.safety import final_save, fingerprint, interrupts, lock, writes
from finetuning.train.safety.guards import FiniteCheckCallback, Preempted, PreemptionCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """The plan of a run and the process it runs in; passed to the later stages.

    Attributes:
        plan: Everything decided before the model loads (shared with `finetuning validate`).
        state: accelerate's ``PartialState`` (which process this is).
        started: ``time.perf_counter()`` at the start.
        finished: Set when ``output_dir`` holds this run, complete: the recipe returns it,
            changing nothing.
    """

    plan: Plan
    state: Any
    started: float
    finished: RunSummary | None = None

    @property
    def config(self) -> Any:
        return self.plan.config

    @property
    def is_main(self) -> bool:
        return bool(self.state.is_main_process)


@dataclass(frozen=True)
class RunCallbacks:
    """The trainer's callbacks, with a reference to each one the run reads back afterwards."""

    throughput: ThroughputCallback
    preemption: PreemptionCallback
    mlflow: MlflowExtras | None
    all: tuple[Any, ...]


def start(loaded: LoadedConfig, cli_args: Any = None) -> RunContext:
    """Build the plan, then act on it: create the output folder, seed, export tracking.

    Raises:
        UserError: Anything the plan finds (batch arithmetic, hardware this machine lacks,
            outputs, resume point, tokenizer, data), or data that would make training
            meaningless.
    """
    from accelerate import PartialState

    started = time.perf_counter()
    interrupts.install()  # SIGTERM/Ctrl-C before training: exit 75, nothing half-written
    config = loaded.config
    # Without a GPU several processes talk over gloo; the trainer reuses this state.
    state = PartialState(
        cpu=bool(config.training_args.get("use_cpu")) or not arguments.has_accelerator()
    )
    plan = build_plan(
        loaded, arguments.world_size(), cli_args, main_process_first=state.main_process_first
    )
    arguments.log_resolved(config, plan.resolved, list(plan.notes) if state.is_main_process else [])
    check_writable(plan.output_dir, plan.checkpoint_bytes)
    lock.acquire(plan.output_dir, state.is_main_process)  # one run per output_dir
    writes.watch(plan.output_dir)  # a full disk is reported on this folder
    finished = finished_run(plan.output_dir, plan.resume, plan.final_dir, plan.trained_config())
    if finished is not None:
        logger.info(
            "the run in %s is complete (step %d of %d; final model in %s): nothing to do, "
            "nothing changed. To train again, choose a new output_dir or set "
            "run_conf.resume_from_checkpoint: false",
            plan.output_dir,
            finished.steps,
            finished.steps,
            plan.final_dir,
        )
        lock.release()  # nothing more to do here
        return RunContext(plan, state, started, finished=finished)
    if state.is_main_process:  # the plan checked it against the checkpoint to resume
        fingerprint.record(config, plan.output_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(plan.logging_dir)
    arguments.set_determinism(config)
    if plan.tracking is not None:
        export_tracking(plan.tracking)
    report = plan.report
    if state.is_main_process:
        logger.info("%s", report.format())
        (plan.output_dir / "data_preflight.txt").write_text(report.format() + "\n")
        logger.info("wrote %s", plan.output_dir / "data_preflight.txt")
    if report.fatal:
        raise UserError(report.fatal)
    return RunContext(plan, state, started)


def prepare_model(ctx: RunContext, score_head: bool = False) -> tuple[Any, bool]:
    """Load the model, grow it for added tokens, save the new base (PEFT), apply the adapter.

    Args:
        ctx: The run.
        score_head: Load it as a sequence classifier with one output (reward models).

    Returns:
        The model to train and whether its vocabulary was resized.
    """
    plan = ctx.plan
    config, tokenizer = plan.config, plan.setup.tokenizer
    check_quantized_vocabulary(config, tokenizer)
    vision = plan.setup.processor is not None  # a vision-language model and its processor
    model = load_model(config, arguments.distributed_kind(config), score_head, vision=vision)
    resized = resize_for_tokenizer(model, tokenizer)
    if resized and config.peft_conf.peft_type != "NO_PEFT" and ctx.is_main:
        base_dir = plan.new_basemodel_dir
        with interrupts.deferred("saving the resized base model"):  # never half-written
            model.save_pretrained(base_dir)
            save_for_inference(
                tokenizer, config.data_conf.chat_template_name, base_dir, plan.setup.processor
            )
        logger.info("saved the resized base model to %s (needed to merge the adapter)", base_dir)
    return apply_adapter(config, model, resized), resized


def reference_model(ctx: RunContext, model: Any) -> Any:
    """The frozen reference of a method that has one (DPO, KTO), or None where TRL needs none.

    With an adapter, TRL takes the base with the adapter disabled (no copy); with precomputed
    reference log-probs, none is kept. Otherwise one frozen copy of the start: TRL would load it
    again from the model's path, which misses a resized vocabulary.
    """
    import copy

    config = ctx.plan.config
    if config.peft_conf.peft_type != "NO_PEFT" or config.training_args.get(
        "precompute_ref_log_probs"
    ):
        return None
    return copy.deepcopy(model).eval().requires_grad_(False)


def trainer_kwargs(ctx: RunContext) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments / DPOConfig, tracking included."""
    plan = ctx.plan
    kwargs = arguments.trainer_kwargs(
        plan.config, plan.resolved, plan.output_dir, plan.tracking is not None
    )
    if plan.tracking is not None and plan.tracking.run_name:
        kwargs.setdefault("run_name", plan.tracking.run_name)
    return kwargs


def callbacks(ctx: RunContext) -> RunCallbacks:
    """All callbacks for the trainer, keeping the ones read after training at hand."""
    plan = ctx.plan
    throughput, preemption = ThroughputCallback(), PreemptionCallback()
    template = plan.config.data_conf.chat_template_name
    found = [
        throughput,
        InferenceTokenizerCallback(plan.setup.tokenizer, template, plan.setup.processor),
        preemption,
        FiniteCheckCallback(),
    ]
    mlflow = None
    if plan.tracking is not None:
        resolved = plan.resolved
        params = flatten(resolved_dict(plan.config), "config.")
        params.update(
            {
                "resolved.world_size": str(resolved.world_size),
                "resolved.per_device_train_batch_size": str(resolved.per_device_train),
                "resolved.gradient_accumulation_steps": str(resolved.accumulation),
                "resolved.per_device_eval_batch_size": str(resolved.per_device_eval),
                "resolved.learning_rate": str(resolved.learning_rate),
            }
        )
        params.update(mixture_params(plan.data.mixture))  # weighted mix: per-source realized
        out = plan.output_dir
        artifacts = [out / "resolved_config.yaml", out / "data_preflight.txt"]
        tags = {
            "finetuning.method": plan.config.method,
            "finetuning.model": plan.config.run_conf.model,
            "finetuning.peft_type": str(plan.config.peft_conf.peft_type),
            "finetuning.version": __version__,
        }
        mlflow = MlflowExtras(params, tags, artifacts, out)
        found.append(mlflow)
    return RunCallbacks(throughput, preemption, mlflow, tuple(found))


def engine_resolved(plan: Plan) -> dict[str, Any]:
    """What the engine derived from the config for this run (shown in the run report)."""
    r = plan.resolved
    return {
        "processes": r.world_size,
        "per-device train batch": r.per_device_train,
        "gradient accumulation": r.accumulation,
        "per-device eval batch": r.per_device_eval,
        "learning rate": r.learning_rate,
        "output_dir": str(plan.output_dir),
        "resumed from": plan.resume,
        "mlflow": plan.tracking.uri if plan.tracking else None,
    }


def train_and_save(ctx: RunContext, trainer: Any, callbacks: RunCallbacks) -> RunSummary:
    """Write the resolved config, train (resuming if asked), save the final model and summary."""
    plan = ctx.plan
    out = plan.output_dir
    trained_config = plan.trained_config()
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with (out / "resolved_config.yaml").open("w") as f:
            f.write(plan.trained_config_header())
            yaml.safe_dump(trained_config, f, sort_keys=False)
        logger.info("wrote %s", out / "resolved_config.yaml")
    # Throughput first, so every logger (MLflow, TensorBoard) sees tokens/s in the same log.
    handler = trainer.callback_handler
    handler.callbacks.sort(key=lambda cb: cb is not callbacks.throughput)
    use_readable_progress(handler)
    # transformers compares the configured eval/save steps with the resumed state's as is.
    same_steps = SameStepsFilter(lambda: trainer.state.max_steps)
    trainer_logger = logging.getLogger("transformers.trainer_utils")
    trainer_logger.addFilter(same_steps)
    try:
        result = trainer.train(resume_from_checkpoint=plan.resume)
    finally:
        trainer_logger.removeFilter(same_steps)
    preemption = callbacks.preemption
    if preemption.stopped_at is not None:
        checkpoint = out / f"checkpoint-{preemption.stopped_at}"
        raise Preempted(
            f"stopped by {preemption.signal_name} after step {preemption.stopped_at} and saved "
            f"{checkpoint}; run the same command again with resume_from_checkpoint: auto to continue"
        )
    final_dir = plan.final_dir
    template = plan.config.data_conf.chat_template_name
    final_save.save_final(
        trainer,
        final_dir,
        lambda d: save_for_inference(plan.setup.tokenizer, template, d, plan.setup.processor),
    )
    seconds = time.perf_counter() - ctx.started
    summary = summarize(trainer, result, callbacks.throughput, final_dir, seconds)
    if ctx.is_main:
        summary.write(out / "run_summary.json")
        report = plan.report
        preflight_lines = [*report.lines, *(f"WARNING: {w}" for w in report.warnings)]
        files = write_report(
            out,
            summary,
            trained_config,
            preflight_lines,
            flatten(plan.config.model_dump(mode="json", exclude_unset=True)),
            engine_resolved(plan),
        )
        mlflow_line = ""
        if callbacks.mlflow is not None:
            run_id = callbacks.mlflow.run_id
            samples = [p for p in [out / "completions.jsonl"] if p.is_file()]  # GRPO
            log_final_artifacts(run_id, [*files, out / "run_summary.json", *samples])
            if run_id and plan.tracking is not None:
                mlflow_line = (
                    f"\n  mlflow: run {run_id}; see it with: {open_command(plan.tracking.uri)}"
                )
        logger.info("%s\n  report: %s%s", summary.format(), files[1], mlflow_line)
    # The run is over: the folder is free for the next run, also when this process goes on
    # (a run started in-process; the CLI's `finally` releases it after an error).
    lock.release()
    return summary
