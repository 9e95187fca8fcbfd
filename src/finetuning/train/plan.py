"""The plan: everything a run decides before the model loads, built by one function.

:func:`build_plan` turns a loaded config and the world size into a frozen :class:`Plan`: the
resolved batch sizes and learning rate, the output and logging folders (checked, not created),
the resume point, the tracking target, the tokenizer setup, the encode settings, and the
prepared data with its preflight report. `finetuning validate` builds exactly this plan and
prints it; each recipe starts from it (plan → model → adapter → trainer → train → save), so a
check added here is made by both. Building the plan creates no output folder, sets no
environment variable and opens no MLflow run; the run does that afterwards
(:func:`finetuning.train.stages.start`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import finetuning.train.methods.eval_plan as eval_plan
from finetuning.config.experiment import ExperimentConfig
from finetuning.config.loading import LoadedConfig, resolved_dict
from finetuning.config.methods import rows_of
from finetuning.config.training import new_basemodel_name
from finetuning.data.encode import EncodeSettings
from finetuning.data.preflight import PreflightReport, encode_settings, preflight
from finetuning.data.prepare import PreparedData
from finetuning.data.tokenizer import TokenizerSetup
from finetuning.errors import Problem, UserError
from finetuning.model.hardware import hardware_problems
from finetuning.tracking import Tracking, plan_tracking
from finetuning.train import arguments
from finetuning.train.batch import Resolved, base_learning_rate, resolve
from finetuning.train.methods.hooks import NO_CHECKS, MethodChecks, plan_module
from finetuning.train.reporting.summary import check_output_dir, estimated_checkpoint_bytes
from finetuning.train.safety.checkpoints import resolve_resume
from finetuning.train.safety.fingerprint import check_resume

#: The header of ``resolved_config.yaml``; the learning rate below it is the one that trained.
TRAINED_HEADER = (
    "# The config this run trained with: every default filled in, and the learning rate the\n"
    "# optimizer used (training_args.learning_rate, overrides already applied, so the overrides\n"
    "# below are neutral and `finetuning {method} THIS_FILE` trains with the same rate).\n"
    "# As written: learning_rate {base:g}, lr_multiplier {multiplier:g}, "
    "lr_batch_size_scaling {scaling} (total batch {total}).\n"
)


@dataclass(frozen=True)
class Plan:
    """What a run decided before loading the model.

    Attributes:
        config: The validated config.
        notes: What loading the config had to say (mapped legacy fields, ...).
        resolved: Batch sizes and the learning rate for this world size.
        output_dir: Where checkpoints and the final model go (checked to be creatable).
        checkpoint_bytes: A lower bound of one checkpoint's size (the free space it needs).
        logging_dir: Where TensorBoard and other logs go.
        resume: The checkpoint to resume from, or None for a fresh run.
        tracking: The MLflow target (uri, experiment, run id and name), or None when off.
        hardware_problems: What this machine lacks for the config (a run stops on them).
        settings: The template and length settings the data is encoded with.
        setup: The prepared tokenizer (template tokens, pad token); None with ``with_data=False``.
        data: The prepared training and validation data; None with ``with_data=False``.
        report: The data preflight report; None with ``with_data=False``.
        method_checks: What the method's own plan module found (its problems, GRPO's reward
            functions); empty for the methods the shared plan serves alone.
        evals: ``eval_conf.generation``, resolved (rows read, metrics imported and checked).
    """

    config: ExperimentConfig
    notes: tuple[str, ...]
    resolved: Resolved
    output_dir: Path
    checkpoint_bytes: int
    logging_dir: Path
    resume: str | None
    tracking: Tracking | None
    hardware_problems: tuple[str, ...]
    settings: EncodeSettings
    setup: TokenizerSetup | None = None
    data: PreparedData | None = None
    report: PreflightReport | None = None
    method_checks: MethodChecks = NO_CHECKS
    evals: tuple[Any, ...] = ()

    @property
    def rewards(self) -> tuple:
        """GRPO: the reward functions, imported and checked (empty for other methods)."""
        return self.method_checks.rewards

    @property
    def new_basemodel_dir(self) -> Path:
        """Where a PEFT run that grew the vocabulary saves the resized base model."""
        return self.output_dir / new_basemodel_name(self.config.sft_args)

    @property
    def final_dir(self) -> Path:
        """Where the final model (or adapter) is saved."""
        return self.output_dir / self.config.run_conf.final_checkpoint_name

    def trained_config(self) -> dict[str, Any]:
        """The resolved config with the learning rate that trains (see :data:`TRAINED_HEADER`).

        ``overrides`` are folded into ``training_args.learning_rate`` and set to neutral, so
        loading this dict again resolves to the same rate instead of scaling it twice.
        """
        data = resolved_dict(self.config)
        data["training_args"]["learning_rate"] = self.resolved.learning_rate
        data["overrides"] = {"lr_multiplier": 1.0, "lr_batch_size_scaling": "none"}
        return data

    def trained_config_header(self) -> str:
        """The comment that ``resolved_config.yaml`` starts with: the rate as the user wrote it."""
        overrides = self.config.overrides
        return TRAINED_HEADER.format(
            method=self.config.method,
            base=base_learning_rate(self.config),
            multiplier=overrides.lr_multiplier,
            scaling=overrides.lr_batch_size_scaling,
            total=self.config.batchsize_conf.total_train_batch_size,
        )

    def lines(self) -> list[str]:
        """The plan in words (what `finetuning validate` prints before the data report)."""
        config, r = self.config, self.resolved
        bs, overrides = config.batchsize_conf, config.overrides
        tracking = self.tracking
        prompt_limit = (
            f", max_prompt_length {self.settings.max_prompt_length}, "
            f"truncation_mode {self.settings.truncation_mode}"
        )
        hook = plan_module(config.method)
        batch = (
            hook.batch_line(config, r)  # GRPO: prompts and completions are different units
            if hasattr(hook, "batch_line")
            else f"batch: total {bs.total_train_batch_size} = {r.world_size} processes x "
            f"{r.per_device_train} per device x {r.accumulation} accumulation; eval "
            f"{r.per_device_eval} per device"
        )
        out = [
            f"method: {config.method}; model: {config.run_conf.model}",
            batch,
            f"learning rate: {r.learning_rate:.3g} (x{overrides.lr_multiplier}, "
            f"{overrides.lr_batch_size_scaling} batch-size scaling)",
            f"output_dir: {self.output_dir}"
            + ("" if self.output_dir.is_dir() else " (will be created)"),
            f"logging_dir: {self.logging_dir}",
            f"resume: {self.resume or 'no (fresh run)'}",
            "tracking: off"
            if tracking is None
            else f"tracking: MLflow {tracking.uri}, experiment {tracking.experiment_name!r}, "
            f"run {tracking.run_id or 'new'} ({tracking.run_name})",
            f"encode: template {self.settings.template.value}, max length "
            f"{self.settings.max_length}"
            + {
                "chat": f", length_handling {self.settings.length_handling}",
                "text": f", length_handling {self.settings.length_handling}",
                "preference": " (a longer pair is dropped)"
                if self.settings.truncation_mode == "drop"
                else prompt_limit,
                "unpaired": prompt_limit,
                "prompt": " (the prompt; longer prompts are left out)",
            }[rows_of(config.method)],
        ]
        if hook is not None and hasattr(hook, "lines"):
            out += hook.lines(config, r, self.method_checks)
        out += eval_plan.lines(config, self.evals)
        if self.setup is not None:
            out.append(f"tokenizer: {self.setup.pad_note}")
        return out

    def format(self) -> str:
        return "\n".join(["plan:", *(f"  {line}" for line in self.lines())])


def build_plan(
    loaded: LoadedConfig,
    world_size: int,
    cli_args: Any = None,
    *,
    with_data: bool = True,
    hardware_must_fit: bool = True,
    main_process_first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Plan:
    """Make every decision a run makes before loading the model, and check each.

    Args:
        loaded: The loaded config.
        world_size: Number of processes the run has.
        cli_args: The parsed command line (MLflow options, ``num_preprocess_workers``), or None.
        with_data: Also set up the tokenizer and prepare the data (`validate --config-only`
            leaves this out).
        hardware_must_fit: Stop on what this machine lacks (a run); `validate` only warns,
            since the config may be meant for another machine.
        main_process_first: A context the data preparation runs in (the run's
            ``PartialState.main_process_first``, so one process fills the cache).

    Raises:
        UserError: Batch arithmetic that does not fit, hardware the config needs (when
            ``hardware_must_fit``), an output folder that cannot be written, a resume setting
            that cannot be satisfied, a tokenizer or data that cannot be used.
    """
    config = loaded.config
    resolved = resolve(config, world_size)
    hook = plan_module(config.method)  # the method's own checks, beside its recipe
    checks = hook.check(loaded, resolved) if hook is not None else NO_CHECKS
    evals = eval_plan.resolve_evals(config, loaded.path)
    problems = (
        tuple(hardware_problems(config))
        + checks.problems
        + tuple(eval_plan.lm_eval_problems(config))
    )
    if problems and hardware_must_fit:
        raise UserError(problems[0] + " (this machine cannot run the config as written)")
    output_dir, logging_dir = arguments.output_dirs(config)
    full = config.peft_conf.peft_type == "NO_PEFT"
    checkpoint_bytes = estimated_checkpoint_bytes(config.run_conf.model, full)
    # The output folder and the data are independent: a problem with the first is reported
    # together with the data's (the README promises every problem at once).
    outputs_problem, resume = None, None
    try:
        check_output_dir(output_dir, checkpoint_bytes)
        resume = resolve_resume(config.run_conf.resume_from_checkpoint, output_dir)
        check_resume(config, resume)  # the config still fits the checkpoint (reads only)
    except UserError as exc:
        outputs_problem = exc
    if outputs_problem is not None and not with_data:
        raise outputs_problem
    tracking = None if outputs_problem else plan_tracking(config, cli_args, output_dir)
    settings = encode_settings(config)
    report = None
    if with_data:
        try:
            report = preflight(
                loaded,
                num_workers=getattr(cli_args, "num_preprocess_workers", None),
                main_process_first=main_process_first,
            )
        except UserError as exc:
            raise exc if outputs_problem is None else _together(outputs_problem, exc) from None
        if outputs_problem is not None:
            raise outputs_problem
        if hook is not None:  # again with the rows (GRPO: the keys its rewards read)
            checks = hook.check(loaded, resolved, report.data.rows)
        eval_plan.check_prompts(evals, report.setup.tokenizer, settings)  # renders, now
    return Plan(
        config=config,
        notes=tuple(loaded.notes),
        resolved=resolved,
        output_dir=output_dir,
        checkpoint_bytes=checkpoint_bytes,
        logging_dir=logging_dir,
        resume=resume,
        tracking=tracking,
        hardware_problems=problems,
        settings=settings,
        setup=report.setup if report else None,
        data=report.data if report else None,
        report=report,
        method_checks=checks,
        evals=evals,
    )


def _together(*errors: UserError) -> UserError:
    """One error listing the problems of several (each error's header, then its problems)."""
    problems: list[Problem] = []
    for error in errors:
        if error.header:
            problems.append(Problem(error.header))
        problems += error.problems
    return UserError(problems, header="the run cannot start:")
