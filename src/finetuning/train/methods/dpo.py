"""The DPO recipe: plan → model → adapter → trainer → train → save.

Shaped like ``sft.py``: the same stages in the same order; what is DPO's own is the preference
data (prompt / chosen / rejected ids from our templates), the reference model and TRL's
``DPOTrainer``.
"""

from __future__ import annotations

import logging
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.collate import PaddingFreeCollator
from finetuning.data.prepare import EncodedSplit
from finetuning.model import attention
from finetuning.model.packing import keeps_examples_apart
from finetuning.train import arguments, stages
from finetuning.train.methods import packed_dpo
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)


def preference_dataset(split: EncodedSplit) -> Any:
    """A ``datasets.Dataset`` of ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``."""
    from datasets import Dataset

    store = split.store
    rows = [store.triple(int(i)) for i in split.indices]
    return Dataset.from_list(rows)


def pretokenized_trainer_class(packed: bool = False) -> type:
    """TRL's DPOTrainer, minus its own tokenisation of the datasets; packed when asked.

    TRL 1.16 always re-tokenises text datasets (joining prompt and completion strings and taking
    their common token prefix). Our datasets are already tokenised from our templates, with the
    prompt/completion boundary checked, so the one hook that prepares datasets returns them as
    they are. With ``packed``, the policy's and the reference's forwards run each micro-batch as
    one packed row (:mod:`finetuning.train.methods.packed_dpo`), wrapped on their first use (the loss or
    the reference log-probs). The training loop and the loss are TRL's.
    """
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    if not packed:
        return PretokenizedDPOTrainer

    class PackedDPOTrainer(PretokenizedDPOTrainer):
        def _pack(self):
            for model in (self.model, self.ref_model):
                if model is not None:
                    packed_dpo.install(model)

        def compute_ref_log_probs(self, model, inputs):
            self._pack()
            return super().compute_ref_log_probs(model, inputs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._pack()
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return PackedDPOTrainer


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with direct preference optimisation.

    Returns:
        What the run did (steps, tokens, losses, reward accuracy and margin, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl import DPOConfig

    # The plan (batch sizes, learning rate, outputs, hardware, resume, tracking, tokenizer and
    # preference data, prepared once and cached), then model and adapter.
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    plan = ctx.plan
    config, data = plan.config, plan.data
    model, _ = stages.prepare_model(ctx)

    # Packed batches (per-example attention, no padding) unless switched off or the model mixes
    # packed sequences; then TRL's padded batches.
    vision = hasattr(data.train.store, "prompt_types")  # image rows: padded, with the images
    packed = config.dpo_args.padding_free and not vision
    if packed:
        kernel = attention.choose(model, config.run_conf.model_args.attn_implementation)
        packed = keeps_examples_apart(model, PaddingFreeCollator())
        if packed:
            logger.info(
                "DPO: chosen and rejected packed into one row; %s", attention.describe(kernel)
            )
        else:
            attention.restore_sdpa(model)
            logger.warning("this model does not keep packed sequences apart: padded DPO batches")

    # Reference: a frozen copy of the start only for a full fine-tune without precomputed
    # reference log-probs.
    ref_model = stages.reference_model(ctx, model)

    # Trainer.
    kwargs = stages.trainer_kwargs(ctx)
    kwargs["include_num_input_tokens_seen"] = "non_padding"
    callbacks = stages.callbacks(ctx)
    dataset, collator = preference_dataset, None
    if vision:
        dataset, collator, kwargs = vision_dpo_parts(plan, kwargs)
    trainer = pretokenized_trainer_class(packed)(
        model=model,
        ref_model=ref_model,
        args=arguments.build_training_arguments(DPOConfig, kwargs),
        train_dataset=dataset(data.train),
        eval_dataset=dataset(data.valid) if data.valid is not None else None,
        processing_class=plan.setup.tokenizer,
        data_collator=collator,
        callbacks=list(callbacks.all),
    )

    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    return stages.train_and_save(ctx, trainer, callbacks)


def vision_dpo_parts(plan: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
    """Image rows: their dataset, the collator that adds images and token types, and the
    trainer arguments that keep the dataset's extra columns for it."""
    from finetuning.data.vision_batches import token_type_key
    from finetuning.data.vision_preference import (
        VisionPreferenceCollator,
        vision_preference_dataset,
    )

    processor, tokenizer = plan.setup.processor, plan.setup.tokenizer
    logger.info("DPO on image rows: padded batches with the prompt's images")
    collator = VisionPreferenceCollator(
        tokenizer.pad_token_id, plan.data.rows, processor, token_type_key(processor)
    )
    return vision_preference_dataset, collator, {**kwargs, "remove_unused_columns": False}
