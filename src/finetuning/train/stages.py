"""The stages both recipes share, as plain functions: start, data, model, train-and-save.

Each recipe (``sft.run``, ``dpo.run``) calls them in order and adds only what is its own: the
collator and dataset, the trainer class and, for DPO, the reference model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetuning import __version__
from finetuning.config.experiment import ExperimentConfig
from finetuning.config.loading import LoadedConfig, resolved_dict
from finetuning.data.preflight import build_report, encode_settings
from finetuning.data.prepare import PreparedData, prepare_data
from finetuning.errors import UserError
from finetuning.model.hardware import hardware_problems
from finetuning.model.loading import (
    apply_adapter,
    check_quantized_vocabulary,
    load_model,
    resize_for_tokenizer,
)
from finetuning.model.tokenizer import (
    TokenizerSetup,
    load_tokenizer,
    save_for_inference,
    setup_tokenizer,
)
from finetuning.report import write_report
from finetuning.tracking import (
    MlflowExtras,
    Tracking,
    flatten,
    log_final_artifacts,
    setup_tracking,
)
from finetuning.train import arguments, final_save, fingerprint, interrupts, lock, writes
from finetuning.train.batch import Resolved, resolve
from finetuning.train.callbacks import InferenceTokenizerCallback, ThroughputCallback
from finetuning.train.checkpoints import resolve_resume
from finetuning.train.guards import FiniteCheckCallback, Preempted, PreemptionCallback
from finetuning.train.summary import (
    RunSummary,
    check_writable,
    estimated_checkpoint_bytes,
    summarize,
)

logger = logging.getLogger(__name__)

NEW_BASEMODEL_DEFAULT = "checkpoint-new-basemodel"


@dataclass
class RunContext:
    """What the start of a run resolved; passed to the later stages.

    Attributes:
        config: The experiment config.
        resolved: Batch sizes and learning rate for this world size.
        output_dir: Where checkpoints and the final model go.
        resume: The checkpoint to resume from, or None.
        tracking: MLflow settings, or None when tracking is off.
        state: accelerate's ``PartialState`` (which process this is).
        cli_args: The parsed command line (or None in-process).
        started: ``time.perf_counter()`` at the start.
    """

    config: ExperimentConfig
    resolved: Resolved
    output_dir: Path
    resume: str | None
    tracking: Tracking | None
    state: Any
    cli_args: Any
    started: float
    preflight_lines: list[str] = field(default_factory=list)

    @property
    def is_main(self) -> bool:
        return bool(self.state.is_main_process)


def start(loaded: LoadedConfig, default_lr: float, cli_args: Any = None) -> RunContext:
    """Resolve batch sizes and learning rate, check the machine and outputs, find the resume point.

    Raises:
        UserError: The config asks for hardware this machine lacks, the output directory is not
            writable, or the resume setting cannot be satisfied.
    """
    from accelerate import PartialState

    started = time.perf_counter()
    interrupts.install()  # SIGTERM/Ctrl-C before training: exit 75, nothing half-written
    config = loaded.config
    # Without a GPU several processes talk over gloo; the trainer reuses this state.
    state = PartialState(
        cpu=bool(config.training_args.get("use_cpu")) or not arguments.has_accelerator()
    )
    resolved = resolve(config, arguments.world_size(), default_lr)
    arguments.log_resolved(config, resolved, loaded.notes if state.is_main_process else [])
    problems = hardware_problems(config)
    if problems:
        raise UserError(problems[0] + " (this machine cannot run the config as written)")
    output_dir, logging_dir = arguments.output_dirs(config)
    full = config.peft_conf.peft_type == "NO_PEFT"
    check_writable(output_dir, estimated_checkpoint_bytes(config.run_conf.model, full))
    lock.acquire(output_dir, state.is_main_process)  # one run per output_dir
    writes.watch(output_dir)  # a full disk is reported on this folder
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(logging_dir)
    resume = resolve_resume(config.run_conf.resume_from_checkpoint, output_dir)
    fingerprint.check_and_record(config, output_dir, resume, state.is_main_process)
    arguments.set_determinism(config)
    tracking = setup_tracking(config, cli_args, output_dir)
    return RunContext(config, resolved, output_dir, resume, tracking, state, cli_args, started)


def prepare_tokenizer_and_data(ctx: RunContext) -> tuple[TokenizerSetup, PreparedData]:
    """Set up the tokenizer and prepare the data (on the main process first; others reuse the cache).

    Raises:
        UserError: Bad data, or data that would make training meaningless.
    """
    config = ctx.config
    setup = setup_tokenizer(config, load_tokenizer(config))
    with ctx.state.main_process_first():
        data = prepare_data(
            config.data_conf,
            setup.tokenizer,
            encode_settings(config),
            config.method,
            num_workers=getattr(ctx.cli_args, "num_preprocess_workers", None),
        )
    report = build_report(config, setup, data)
    ctx.preflight_lines = [*report.lines, *(f"WARNING: {w}" for w in report.warnings)]
    if ctx.is_main:
        logger.info("%s", report.format())
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        (ctx.output_dir / "data_preflight.txt").write_text(report.format() + "\n")
        logger.info("wrote %s", ctx.output_dir / "data_preflight.txt")
    if report.fatal:
        raise UserError(report.fatal)
    return setup, data


def prepare_model(ctx: RunContext, setup: TokenizerSetup) -> tuple[Any, bool]:
    """Load the model, grow it for added tokens, save the new base (PEFT), apply the adapter.

    Returns:
        The model to train and whether its vocabulary was resized.
    """
    config = ctx.config
    check_quantized_vocabulary(config, setup.tokenizer)
    model = load_model(config, arguments.distributed_kind(config))
    resized = resize_for_tokenizer(model, setup.tokenizer)
    if resized and config.peft_conf.peft_type != "NO_PEFT" and ctx.is_main:
        name = (
            config.sft_args.save_name_if_new_basemodel if config.sft_args else NEW_BASEMODEL_DEFAULT
        )
        base_dir = ctx.output_dir / name
        with interrupts.deferred("saving the resized base model"):  # never half-written
            model.save_pretrained(base_dir)
            save_for_inference(setup.tokenizer, config.data_conf.chat_template_name, base_dir)
        logger.info("saved the resized base model to %s (needed to merge the adapter)", base_dir)
    return apply_adapter(config, model, resized), resized


def trainer_kwargs(ctx: RunContext) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments / DPOConfig, tracking included."""
    kwargs = arguments.trainer_kwargs(
        ctx.config, ctx.resolved, ctx.output_dir, ctx.tracking is not None
    )
    if ctx.tracking is not None and ctx.tracking.run_name:
        kwargs.setdefault("run_name", ctx.tracking.run_name)
    return kwargs


def callbacks(ctx: RunContext, setup: TokenizerSetup) -> tuple[ThroughputCallback, list[Any]]:
    """The throughput callback (kept for the summary) and all callbacks for the trainer."""
    throughput = ThroughputCallback()
    template = ctx.config.data_conf.chat_template_name
    found = [
        throughput,
        InferenceTokenizerCallback(setup.tokenizer, template),
        PreemptionCallback(),
        FiniteCheckCallback(),
    ]
    if ctx.tracking is not None:
        resolved = ctx.resolved
        params = flatten(resolved_dict(ctx.config), "config.")
        params.update(
            {
                "resolved.world_size": str(resolved.world_size),
                "resolved.per_device_train_batch_size": str(resolved.per_device_train),
                "resolved.gradient_accumulation_steps": str(resolved.accumulation),
                "resolved.per_device_eval_batch_size": str(resolved.per_device_eval),
                "resolved.learning_rate": str(resolved.learning_rate),
            }
        )
        artifacts = [ctx.output_dir / "resolved_config.yaml", ctx.output_dir / "data_preflight.txt"]
        tags = {
            "finetuning.method": ctx.config.method,
            "finetuning.model": ctx.config.run_conf.model,
            "finetuning.peft_type": str(ctx.config.peft_conf.peft_type),
            "finetuning.version": __version__,
        }
        found.append(MlflowExtras(params, tags, artifacts, ctx.output_dir))
    return throughput, found


def train_and_save(
    ctx: RunContext, trainer: Any, setup: TokenizerSetup, throughput: ThroughputCallback
) -> RunSummary:
    """Write the resolved config, train (resuming if asked), save the final model and summary."""
    if ctx.is_main:
        ctx.output_dir.mkdir(parents=True, exist_ok=True)
        with (ctx.output_dir / "resolved_config.yaml").open("w") as f:
            yaml.safe_dump(resolved_dict(ctx.config), f, sort_keys=False)
        logger.info("wrote %s", ctx.output_dir / "resolved_config.yaml")
    # Throughput first, so every logger (MLflow, TensorBoard) sees tokens/s in the same log.
    handler = trainer.callback_handler
    handler.callbacks.sort(key=lambda cb: not isinstance(cb, ThroughputCallback))
    result = trainer.train(resume_from_checkpoint=ctx.resume)
    (preemption,) = [cb for cb in handler.callbacks if isinstance(cb, PreemptionCallback)]
    if preemption.stopped_at is not None:
        checkpoint = ctx.output_dir / f"checkpoint-{preemption.stopped_at}"
        raise Preempted(
            f"stopped by {preemption.signal_name} after step {preemption.stopped_at} and saved "
            f"{checkpoint}; run the same command again with resume_from_checkpoint: auto to continue"
        )
    final_dir = ctx.output_dir / ctx.config.run_conf.final_checkpoint_name
    template = ctx.config.data_conf.chat_template_name
    final_save.save_final(
        trainer, final_dir, lambda d: save_for_inference(setup.tokenizer, template, d)
    )
    summary = summarize(trainer, result, throughput, final_dir, time.perf_counter() - ctx.started)
    if ctx.is_main:
        summary.write(ctx.output_dir / "run_summary.json")
        files = write_report(
            ctx.output_dir, summary, resolved_dict(ctx.config), ctx.preflight_lines
        )
        extras = [cb for cb in handler.callbacks if isinstance(cb, MlflowExtras)]
        if extras:
            log_final_artifacts(extras[0].run_id, [*files, ctx.output_dir / "run_summary.json"])
        logger.info("%s\n  report: %s", summary.format(), files[1])
    return summary
