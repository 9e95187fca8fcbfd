"""GRPO's part of the plan: the generation batch arithmetic, vLLM, and the reward functions.

Everything here is checked before the model loads, with the config fields named. The batch
arithmetic: ``batchsize_conf.total_train_batch_size`` is the number of prompts per optimizer
step; each is sampled ``training_args.num_generations`` times, so a step trains on
``total x num_generations`` completions, split into ``processes x per-device x accumulation``
like any other batch (``max_per_device_train_batch_size`` counts completions). TRL generates
once per ``steps_per_generation`` micro-batches (default: the accumulation, i.e. once per
optimizer step, so ``generation_batch_size`` = the step's completions); a generation batch must
hold whole prompt groups.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from finetuning.config.training_args import training_arg_default
from finetuning.errors import Problem, UserError
from finetuning.train.batch import Resolved, sequences_per_prompt
from finetuning.train.methods.hooks import MethodChecks
from finetuning.train.methods.reward_loading import resolve_rewards


def check(loaded: Any, resolved: Resolved, rows: Any = None) -> MethodChecks:
    """GRPO's plan check (:mod:`finetuning.train.methods.hooks`).

    The generation batch arithmetic, what vLLM needs, and the reward functions: imported and
    checked for their signatures, and, once ``rows`` are given, for the row keys they read.
    """
    config = loaded.config
    generation_batch(config, resolved)
    specs = config.grpo_args.rewards
    if specs and all(spec.weight == 0 for spec in specs):
        raise UserError(
            Problem(
                "every reward has weight 0: every completion's total reward would be 0, so "
                "every advantage is 0 and GRPO learns nothing; give at least one reward a "
                "weight other than 0 (a weight-0 reward beside others is logged only)",
                "grpo_args.rewards",
            )
        )
    rewards = resolve_rewards(config.grpo_args.rewards, config_folder(loaded.path), rows or ())
    return MethodChecks(problems=tuple(vllm_problems(config)), rewards=tuple(rewards))


def generation_batch(config: Any, resolved: Resolved) -> tuple[int, int]:
    """(generation_batch_size, steps_per_generation) as TRL will derive them.

    Raises:
        UserError: A setting TRL would reject once the model is loaded (fewer than 2
            generations, both generation fields set, a generation batch that does not split
            into micro-batches or prompt groups, an eval batch that does not hold whole groups).
    """
    args = config.training_args
    groups = sequences_per_prompt(config)
    if groups < 2:
        raise UserError(
            f"training_args.num_generations is {groups}: GRPO compares at least 2 completions "
            "of each prompt (the advantage is the reward minus the group's mean)"
        )
    if args.get("auto_find_batch_size"):
        raise UserError(
            "training_args.auto_find_batch_size is not supported by GRPO (a smaller batch would "
            "split prompt groups): lower batchsize_conf.max_per_device_train_batch_size instead"
        )
    micro = resolved.per_device_train * resolved.world_size
    size, steps = args.get("generation_batch_size"), args.get("steps_per_generation")
    if size is not None and steps is not None:
        raise UserError(
            "training_args: set generation_batch_size or steps_per_generation, not both"
        )
    if size is None:
        steps = steps or resolved.accumulation
        size = micro * steps
    elif size % micro:
        raise UserError(
            f"training_args.generation_batch_size {size} must be a multiple of the completions "
            f"of one micro-step across processes ({resolved.world_size} processes x "
            f"{resolved.per_device_train} per device = {micro})"
        )
    else:
        steps = size // micro
    if size % groups:
        raise UserError(
            f"the generation batch ({size} completions: training_args.generation_batch_size, or "
            f"{micro} per micro-step x steps_per_generation {steps}) is not a multiple of "
            f"training_args.num_generations {groups}: it must hold whole prompt groups"
        )
    strategy = args.get("eval_strategy", "no")
    if strategy != "no":
        eval_groups = args.get("num_generations_eval") or groups
        eval_batch = resolved.per_device_eval * resolved.world_size
        if eval_batch % eval_groups:
            raise UserError(
                f"the eval batch ({resolved.world_size} processes x "
                f"batchsize_conf.per_device_eval_batch_size {resolved.per_device_eval}) is not a "
                f"multiple of training_args.num_generations_eval (or num_generations) "
                f"{eval_groups}: set per_device_eval_batch_size to a multiple of it"
            )
    return size, steps


def uses_vllm(config: Any) -> bool:
    """Whether generation runs on vLLM (``grpo_args.use_vllm`` or ``training_args.use_vllm``)."""
    return bool(config.grpo_args.use_vllm or config.training_args.get("use_vllm"))


def vllm_problems(config: Any) -> list[str]:
    """What this machine lacks for vLLM generation (empty when it is not asked for)."""
    if not uses_vllm(config):
        return []
    problems = []
    if importlib.util.find_spec("vllm") is None:
        problems.append(
            "grpo_args.use_vllm: the vllm package is not installed (pip install vllm, on a CUDA "
            "machine), or set use_vllm: false to generate with transformers"
        )
    import torch

    if not torch.cuda.is_available():
        problems.append(
            "grpo_args.use_vllm: vLLM generation needs a CUDA GPU; this machine has none"
        )
    return problems


def batch_line(config: Any, resolved: Resolved) -> str:
    """The plan's batch line in its units: prompts per step, split as completions."""
    total = config.batchsize_conf.total_train_batch_size
    groups = sequences_per_prompt(config)
    r = resolved
    return (
        f"batch: {total} prompts x {groups} generations = {total * groups} completions per step "
        f"= {r.world_size} processes x {r.per_device_train} completions per device x "
        f"{r.accumulation} accumulation; eval {r.per_device_eval} completions per device"
    )


def lines(config: Any, resolved: Resolved, checks: MethodChecks) -> list[str]:
    """The GRPO lines of the plan (what `finetuning validate` prints)."""
    total = config.batchsize_conf.total_train_batch_size
    groups = sequences_per_prompt(config)
    size, steps = generation_batch(config, resolved)
    completion = config.training_args.get("max_completion_length") or training_arg_default(
        "grpo", "max_completion_length"
    )
    beta = config.training_args.get("beta", training_arg_default("grpo", "beta"))
    backend = "vLLM (colocated)" if uses_vllm(config) else "transformers generate"
    out = [
        f"grpo: {total} prompts x {groups} generations = {total * groups} completions per step "
        f"(up to {completion} tokens each); generation batch {size} every {steps} "
        f"micro-step(s); beta {beta} ({'with' if beta else 'no'} reference model / KL); "
        f"generation: {backend}",
    ]
    for r in checks.rewards:
        out.append(
            f"reward {r.name}: {r.source} x {r.weight:g}" + (f" {r.kwargs}" if r.kwargs else "")
        )
    return out


def config_folder(path: Path | None) -> Path:
    """The folder relative reward files are read from: the config file's (else the cwd)."""
    return path.resolve().parent if path is not None else Path.cwd()
