"""The SFT recipe: resolve → data → tokenizer → model → adapter → trainer → train → save."""

from __future__ import annotations

import logging
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.collate import PaddedCollator, PaddingFreeCollator, SFTDataset
from finetuning.model.packing import keeps_examples_apart
from finetuning.train import arguments, stages
from finetuning.train.loss import chunked_causal_lm_loss
from finetuning.train.summary import RunSummary

logger = logging.getLogger(__name__)

DEFAULT_LEARNING_RATE = 5e-5


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Fine-tune the model of ``loaded.config`` with supervised fine-tuning.

    Returns:
        What the run did (steps, tokens, losses, where the outputs are).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from transformers import Trainer, TrainingArguments

    # Resolve batch sizes, learning rate, outputs, hardware, resume and tracking.
    ctx = stages.start(loaded, DEFAULT_LEARNING_RATE, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    config = ctx.config

    # Tokenizer and data (prepared once, cached), then model and adapter.
    setup, data = stages.prepare_tokenizer_and_data(ctx)
    model, _ = stages.prepare_model(ctx, setup)

    # Trainer: padding-free micro-batches by default (when the model keeps packed examples
    # apart), padded ones otherwise; the loss in fp32 chunks unless Liger's fused kernel does it.
    kwargs = stages.trainer_kwargs(ctx)
    tokenizer = setup.tokenizer
    padding_free = config.sft_args.padding_free
    if padding_free and not keeps_examples_apart(model):
        logger.warning(
            "this model/attention implementation does not keep packed examples apart: falling "
            "back to padded batches grouped by length"
        )
        padding_free = False
        kwargs.setdefault("train_sampling_strategy", "group_by_length")
    if padding_free:
        collator: Any = PaddingFreeCollator()
        kwargs["include_num_input_tokens_seen"] = "all"  # a packed row has no padding
    else:
        eos = tokenizer.eos_token_id if setup.convert_pad_to_eos else None
        collator = PaddedCollator(tokenizer.pad_token_id, config.data_conf.padding_side, eos)
    throughput, callbacks = stages.callbacks(ctx, setup)
    trainer = Trainer(
        model=model,
        args=arguments.build_training_arguments(TrainingArguments, kwargs),
        train_dataset=SFTDataset(data.train),
        eval_dataset=SFTDataset(data.valid) if data.valid is not None else None,
        data_collator=collator,
        callbacks=callbacks,
        compute_loss_func=None if kwargs.get("use_liger_kernel") else chunked_causal_lm_loss,
    )

    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    return stages.train_and_save(ctx, trainer, setup, throughput)
