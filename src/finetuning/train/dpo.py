"""The DPO recipe: resolve → data → tokenizer → model → adapter → trainer → train → save.

Shaped like ``sft.py``: the same stages in the same order; what is DPO's own is the preference
data (prompt / chosen / rejected ids from our templates), the reference model and TRL's
``DPOTrainer``.
"""

from __future__ import annotations

import copy
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.prepare import EncodedSplit
from finetuning.train import arguments, stages
from finetuning.train.summary import RunSummary

DEFAULT_LEARNING_RATE = 1e-6


def preference_dataset(split: EncodedSplit) -> Any:
    """A ``datasets.Dataset`` of ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``."""
    from datasets import Dataset

    store = split.store
    rows = [store.triple(int(i)) for i in split.indices]
    return Dataset.from_list(rows)


def pretokenized_trainer_class() -> type:
    """TRL's DPOTrainer, minus its own tokenisation of the datasets.

    TRL 1.16 always re-tokenises text datasets (joining prompt and completion strings and taking
    their common token prefix). Our datasets are already tokenised from our templates, with the
    prompt/completion boundary checked, so the one hook that prepares datasets returns them as
    they are. This is the only override; the training loop is TRL's.
    """
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenizedDPOTrainer


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with direct preference optimisation.

    Returns:
        What the run did (steps, tokens, losses, reward accuracy and margin, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl import DPOConfig

    # Resolve batch sizes, learning rate, outputs, hardware, resume and tracking.
    ctx = stages.start(loaded, DEFAULT_LEARNING_RATE, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    config = ctx.config

    # Tokenizer and preference data (prepared once, cached), then model and adapter.
    setup, data = stages.prepare_tokenizer_and_data(ctx)
    model, _ = stages.prepare_model(ctx, setup)

    # Reference: with an adapter, the base with the adapter disabled (no copy); with
    # precomputed reference log-probs, none is kept; otherwise one frozen copy of the start.
    ref_model = None
    full_parameter = config.peft_conf.peft_type == "NO_PEFT"
    if full_parameter and not config.training_args.get("precompute_ref_log_probs"):
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)

    # Trainer.
    kwargs = stages.trainer_kwargs(ctx)
    kwargs["include_num_input_tokens_seen"] = "non_padding"
    throughput, callbacks = stages.callbacks(ctx, setup)
    trainer = pretokenized_trainer_class()(
        model=model,
        ref_model=ref_model,
        args=arguments.build_training_arguments(DPOConfig, kwargs),
        train_dataset=preference_dataset(data.train),
        eval_dataset=preference_dataset(data.valid) if data.valid is not None else None,
        processing_class=setup.tokenizer,
        callbacks=callbacks,
    )

    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    return stages.train_and_save(ctx, trainer, setup, throughput)
