"""The GRPO recipe: plan → model → adapter → trainer → train → save.

Shaped like ``dpo.py``; what is GRPO's own: the prompts (token ids from our template plus the
generation prompt, ``data/prompts.py``), the reward functions (resolved in the plan,
``train/methods/reward_loading.py``) and TRL's ``GRPOTrainer``, which samples ``num_generations``
completions per prompt, scores them and computes the policy loss. Generation is transformers'
``generate`` by default, or vLLM inside the process with ``grpo_args.use_vllm``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.prepare import EncodedSplit
from finetuning.data.prompts import reward_columns
from finetuning.data.stop_tokens import stop_ids
from finetuning.train import arguments, stages
from finetuning.train.methods.grpo_plan import uses_vllm
from finetuning.train.methods.reward_loading import RewardCall
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)

COMPLETIONS_FILE = "completions.jsonl"


class PromptItems:
    """GRPO's rows by store index: the rendered prompt, its ids, the row's keys, its location.

    TRL's datasets hold only the index (``_row``); the trainer looks the item up here when a
    batch is generated, so rows keep their keys and value types as written (an ``answer`` may
    be a number in one row and a string in the next, which an Arrow table would refuse), and
    each item goes to the reward functions as it is.
    """

    def __init__(self, store: Any, rows: list[dict[str, Any]], tokenizer: Any):
        self.store, self.rows, self.tokenizer = store, rows, tokenizer
        self._items: dict[int, dict[str, Any]] = {}

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i not in self._items:
            ids = self.store.row(i)[0].tolist()
            row = self.rows[i]
            item = reward_columns(row)
            item.update(
                prompt=self.tokenizer.decode(ids, skip_special_tokens=False),
                _prompt_ids=ids,
                _where=row.get("_where", ""),
            )
            self._items[i] = item
        return self._items[i]


def index_dataset(split: EncodedSplit) -> Any:
    """A ``datasets.Dataset`` of the split's store indices (column ``_row``)."""
    from datasets import Dataset

    return Dataset.from_dict({"_row": [int(i) for i in split.indices]})


def engine_trainer_class() -> type:
    """TRL's GRPOTrainer, generating from our prompt ids and writing sampled completions."""
    from trl import GRPOTrainer

    class EngineGRPOTrainer(GRPOTrainer):
        completions_every = 1
        completions_per_log = 4
        _logs_written = 0

        items: PromptItems

        def _generate_and_score_completions(self, inputs):
            inputs = [dict(self.items[int(x["_row"])]) for x in inputs]
            self._engine_prompt_ids = [list(x["_prompt_ids"]) for x in inputs]
            return super()._generate_and_score_completions(inputs)

        def _tokenize_prompts(self, prompts):
            # The ids our template rendered (with the generation prompt): TRL applies no chat
            # template and adds no special tokens of its own.
            return self._engine_prompt_ids, None, {}

        def log(self, logs, start_time=None):
            super().log(logs, start_time)
            if "loss" in logs and self.accelerator.is_main_process and self.completions_every:
                if self._logs_written % self.completions_every == 0:
                    write_completions(self, Path(self.args.output_dir) / COMPLETIONS_FILE)
                self._logs_written += 1

    return EngineGRPOTrainer


def write_completions(trainer: Any, path: Path) -> None:
    """Append the first few completions of the latest generation batch, with their rewards."""
    logs = trainer._logs
    n = min(trainer.completions_per_log, len(logs["prompt"]))
    names = list(trainer.reward_func_names)
    weights = trainer.reward_weights.tolist()
    with path.open("a", encoding="utf-8") as f:
        for i in range(n):
            rewards = {name: logs["rewards"][name][i] for name in names}
            total = sum(
                w * v for w, v in zip(weights, rewards.values(), strict=True) if v == v
            )  # NaN (a function returned None) counts as nothing, as in TRL's total
            entry = {
                "step": trainer.state.global_step,
                "prompt": logs["prompt"][i],
                "completion": logs["completion"][i],
                "rewards": rewards,
                "reward": total,
                "advantage": logs["advantages"][i],
            }
            f.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")


def _replace_reference(trainer: Any, model: Any) -> None:
    """A full-parameter reference of a resized model: the policy's own starting weights.

    TRL loads the reference again from the model's folder, which lacks the tokens the run added
    to the vocabulary; it gets the same rows, so the KL compares like with like.
    """
    ref = trainer.accelerator.unwrap_model(trainer.ref_model)
    ref.resize_token_embeddings(model.get_input_embeddings().weight.shape[0])
    ref.load_state_dict(model.state_dict(), strict=False)


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with GRPO on its reward functions.

    Returns:
        What the run did (steps, tokens, losses, the mean rewards, outputs).

    Raises:
        UserError: Anything about the config, data, rewards or machine that the user must fix;
            raised before the model is loaded whenever it can be known by then. A reward
            function that fails while training stops the run with one, naming the row.
    """
    from trl import GRPOConfig

    # The plan (batch sizes, learning rate, outputs, resume, tracking, tokenizer, prompts and
    # the reward functions, imported and checked), then model and adapter.
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    plan = ctx.plan
    config, data, tokenizer = plan.config, plan.data, plan.setup.tokenizer
    model, resized = stages.prepare_model(ctx)

    # Generation stops at the template's end-of-turn marker (and the tokenizer's EOS).
    eos, _ = stop_ids(tokenizer, config.data_conf.chat_template_name)
    model.generation_config.eos_token_id = eos

    kwargs = stages.trainer_kwargs(ctx)
    kwargs["include_num_input_tokens_seen"] = "no"  # GRPOTrainer counts prompt + completion
    kwargs["reward_weights"] = [r.weight for r in plan.rewards]
    if uses_vllm(config):  # TRL's colocate mode: vLLM in this process, sharing the GPU
        kwargs["use_vllm"] = True
        kwargs.setdefault("vllm_mode", "colocate")
    callbacks = stages.callbacks(ctx)
    trainer = engine_trainer_class()(
        model=model,
        reward_funcs=[RewardCall(r) for r in plan.rewards],
        args=arguments.build_training_arguments(GRPOConfig, kwargs),
        train_dataset=index_dataset(data.train),
        eval_dataset=index_dataset(data.valid) if data.valid is not None else None,
        processing_class=tokenizer,
        callbacks=list(callbacks.all),
    )
    trainer.items = PromptItems(data.train.store, data.rows, tokenizer)
    trainer.completions_every = config.grpo_args.completions_every
    trainer.completions_per_log = config.grpo_args.completions_per_log
    if trainer.ref_model is not None and resized:
        _replace_reference(trainer, model)
    logger.info(
        "GRPO: %d prompts, rewards %s",
        len(trainer.train_dataset),
        ", ".join(f"{r.name} x {r.weight:g}" for r in plan.rewards),
    )

    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    summary = stages.train_and_save(ctx, trainer, callbacks)
    for call in trainer.reward_funcs:
        if isinstance(call, RewardCall) and (note := call.none_note()):
            logger.warning(note)
    return summary
