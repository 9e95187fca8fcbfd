"""The KTO recipe: plan → model → adapter → trainer → train → save.

Shaped like ``dpo.py``; what is KTO's own is the unpaired data (prompt / completion ids and a
desirable-or-not label, from our templates, :mod:`finetuning.data.unpaired`) and TRL's
``KTOTrainer`` (stable API in TRL 1.16: ``from trl import KTOTrainer``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from finetuning.config.loading import LoadedConfig
from finetuning.config.training_args import training_arg_default
from finetuning.data.prepare import EncodedSplit
from finetuning.train import arguments, stages
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)


def kto_dataset(split: EncodedSplit, seed: int | None) -> Any:
    """A ``datasets.Dataset`` of ``prompt_ids`` / ``completion_ids`` / ``label``.

    With ``seed``, the examples are shuffled once: KTO trains them in a fixed order (each one's
    KL term is estimated against its neighbours in the micro-batch), and files often hold all
    desirable examples before the undesirable ones (unpaired preference rows do).
    """
    from datasets import Dataset

    order = np.asarray(split.indices)
    if seed is not None:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    store = split.store
    return Dataset.from_list([store.example(int(i)) for i in order])


def pretokenized_trainer_class() -> type:
    """TRL's KTOTrainer, minus its own tokenisation of the datasets.

    TRL 1.16 always re-tokenises in ``KTOTrainer._prepare_dataset`` (prompt extraction,
    unpairing, chat template, common-prefix split, max_length filter, KL completions, balance
    warning). Our datasets are already tokenised from our templates (the prompt/completion
    boundary checked, too-long examples cut or dropped, the balance reported by the preflight),
    so the override keeps only the KL completions, built exactly as TRL builds them.
    """
    from trl import KTOTrainer

    class PretokenizedKTOTrainer(KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if not self.calculate_KL:
                return dataset

            # As TRL 1.16 builds them (kto_trainer.py, "Add KL completions if needed"): the
            # completions rotated by one within each batch of per_device_train_batch_size, so
            # each example's KL term pairs its prompt with a neighbour's completion.
            size = args.per_device_train_batch_size
            completions = dataset["completion_ids"]
            rotated = []
            for start in range(0, len(completions), size):
                batch = completions[start : start + size]
                rotated += [batch[-1], *batch[:-1]]
            return dataset.add_column("KL_completion_ids", rotated)

    return PretokenizedKTOTrainer


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with KTO on desirable/undesirable examples.

    Returns:
        What the run did (steps, tokens, losses, the KL term and rewards, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl import KTOConfig

    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    plan = ctx.plan
    data = plan.data
    model, _ = stages.prepare_model(ctx)

    # Reference: with an adapter, TRL's (the adapter's initial state, no model copy); a frozen
    # copy of the start only for a full fine-tune without precomputed reference log-probs.
    ref_model = stages.reference_model(ctx, model)

    kwargs = stages.trainer_kwargs(ctx)
    seed = int(kwargs.get("seed", training_arg_default("kto", "seed")))
    callbacks = stages.callbacks(ctx)
    trainer = pretokenized_trainer_class()(
        model=model,
        ref_model=ref_model,
        args=arguments.build_training_arguments(KTOConfig, kwargs),
        train_dataset=kto_dataset(data.train, seed),
        eval_dataset=kto_dataset(data.valid, seed) if data.valid is not None else None,
        processing_class=plan.setup.tokenizer,
        callbacks=list(callbacks.all),
    )
    return stages.train_and_save(ctx, trainer, callbacks)
