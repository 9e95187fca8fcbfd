"""What the ORPO and SimPO recipes share: paired preference data and no reference model.

Both run one of TRL's older-style preference trainers (``ORPOTrainer``, ``CPOTrainer``; in
``trl.experimental`` in TRL 1.16), which tokenise text datasets row by row in their
``__init__`` (``tokenize_row``). The engine hands them the prompt / chosen / rejected ids from
our templates (:mod:`finetuning.data.preference`, as for DPO), in the columns their collator
pads, and the one per-row hook returns each row as it is. No reference model is built.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.encode import IGNORE
from finetuning.data.prepare import EncodedSplit
from finetuning.train import arguments, stages
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)


def paired_dataset(split: EncodedSplit) -> Any:
    """A ``datasets.Dataset`` in the columns of TRL's ``DPODataCollatorWithPadding``.

    ``prompt_input_ids``; ``chosen_input_ids`` and ``rejected_input_ids`` (prompt + completion)
    with their ``*_attention_mask`` and ``*_labels`` (the prompt masked with -100).
    """
    from datasets import Dataset

    store = split.store
    rows = []
    for i in split.indices:
        triple = store.triple(int(i))
        prompt = triple["prompt_ids"]
        row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
        for part in ("chosen", "rejected"):
            completion = triple[f"{part}_ids"]
            row[f"{part}_input_ids"] = prompt + completion
            row[f"{part}_attention_mask"] = [1] * (len(prompt) + len(completion))
            row[f"{part}_labels"] = [IGNORE] * len(prompt) + completion
        rows.append(row)
    return Dataset.from_list(rows)


def pretokenized(trainer_class: type) -> type:
    """``trainer_class`` (ORPOTrainer / CPOTrainer) taking our tokenised rows as they are."""
    import torch

    class Pretokenized(trainer_class):
        def tokenize_row(self, feature, model=None):
            return feature  # already tokenised from our templates

        def _track_num_input_tokens(self, inputs):
            # The batch has no `input_ids` (transformers would warn each step and count 0):
            # count the non-padding tokens of the chosen and rejected sequences.
            if self.args.include_num_input_tokens_seen == "no":
                return
            masks = [inputs[k] for k in ("chosen_attention_mask", "rejected_attention_mask")]
            tokens = torch.as_tensor(
                sum(int(m.sum()) for m in masks), device=self.args.device, dtype=torch.int64
            )
            self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    Pretokenized.__name__ = f"Pretokenized{trainer_class.__name__}"
    return Pretokenized


@contextlib.contextmanager
def _quiet_maps() -> Iterator[None]:
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def run_reference_free(
    loaded: LoadedConfig, cli_args: Any, trainer_class: type, config_class: type
) -> RunSummary:
    """plan → model → adapter → ``trainer_class`` (no reference model) → train → save."""
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    plan = ctx.plan
    data = plan.data
    model, _ = stages.prepare_model(ctx)
    kwargs = stages.trainer_kwargs(ctx)
    callbacks = stages.callbacks(ctx)
    with _quiet_maps():  # the trainers map our rows through no-op steps: no progress bars
        trainer = pretokenized(trainer_class)(
            model=model,
            args=arguments.build_training_arguments(config_class, kwargs),
            train_dataset=paired_dataset(data.train),
            eval_dataset=paired_dataset(data.valid) if data.valid is not None else None,
            processing_class=plan.setup.tokenizer,
            callbacks=list(callbacks.all),
        )
    return stages.train_and_save(ctx, trainer, callbacks)
