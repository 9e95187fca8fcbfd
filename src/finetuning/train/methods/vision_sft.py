"""SFT on image rows: the processor's image tensors in padded batches (no packing)."""

from __future__ import annotations

import logging
from typing import Any

from finetuning.data.vision_batches import VisionCollator, VisionDataset, token_type_key
from finetuning.train import arguments, stages
from finetuning.train.loss import chunked_causal_lm_loss

logger = logging.getLogger(__name__)


def is_vision_run(plan: Any) -> bool:
    """Whether the plan's data was encoded for a vision-language model (image rows)."""
    return plan.setup.processor is not None and hasattr(plan.data.train.store, "image_of")


def vision_trainer(
    ctx: stages.RunContext, model: Any, kwargs: dict[str, Any]
) -> tuple[Any, stages.RunCallbacks]:
    """The transformers ``Trainer`` over image rows.

    Batches are padded (grouping by length would open every image once just to measure the
    rows): packing would need every family's image position
    rules (Qwen2-VL's 3-D rope, Gemma 3's bidirectional image attention) to hold across packed
    examples, so it is not used.
    """
    from transformers import Trainer, TrainingArguments

    plan = ctx.plan
    config, setup, data = plan.config, plan.setup, plan.data
    processor = setup.processor
    if config.sft_args.padding_free:
        logger.info(
            "batching: padded (image rows are not packed: sft_args.padding_free does not apply to "
            "a vision-language model)"
        )
    types_key = token_type_key(processor)
    collator = VisionCollator(
        setup.tokenizer.pad_token_id,
        config.data_conf.padding_side,
        (types_key,) if types_key else (),
    )
    callbacks = stages.callbacks(ctx)
    trainer = Trainer(
        model=model,
        args=arguments.build_training_arguments(TrainingArguments, kwargs),
        train_dataset=VisionDataset(data.train, data.rows, processor, types_key),
        eval_dataset=VisionDataset(data.valid, data.rows, processor, types_key)
        if data.valid is not None
        else None,
        data_collator=collator,
        callbacks=list(callbacks.all),
        compute_loss_func=None if kwargs.get("use_liger_kernel") else chunked_causal_lm_loss,
    )
    return trainer, callbacks
