"""The SFT recipe: plan → model → adapter → trainer → train → save."""

from __future__ import annotations

import logging
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.collate import PaddedCollator, PaddingFreeCollator, SFTDataset
from finetuning.model import attention
from finetuning.model.packing import keeps_examples_apart
from finetuning.train import arguments, stages
from finetuning.train.loss import chunked_causal_lm_loss, keeps_trained_logits
from finetuning.train.methods import vision_sft
from finetuning.train.reporting import evaluation
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Fine-tune the model of ``loaded.config`` with supervised fine-tuning.

    Returns:
        What the run did (steps, tokens, losses, where the outputs are).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    # The plan (batch sizes, learning rate, outputs, hardware, resume, tracking, tokenizer and
    # data, prepared once and cached), then model and adapter.
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    model, _ = stages.prepare_model(ctx)
    trainer, callbacks = causal_lm_trainer(ctx, model)
    # Train, then save the final model (the adapter for PEFT) with an inference-ready tokenizer.
    return stages.train_and_save(ctx, trainer, callbacks)


def causal_lm_trainer(ctx: stages.RunContext, model: Any) -> tuple[Any, stages.RunCallbacks]:
    """The transformers ``Trainer`` over the plan's encoded examples (SFT and pretrain).

    Padding-free micro-batches by default (when the model keeps packed examples apart), padded
    ones otherwise; the loss in fp32 chunks unless Liger's fused kernel does it.
    """
    from transformers import Trainer, TrainingArguments

    plan = ctx.plan
    config, setup, data = plan.config, plan.setup, plan.data
    kwargs = stages.trainer_kwargs(ctx)
    if vision_sft.is_vision_run(plan):  # image rows: the processor's tensors, padded batches
        return vision_sft.vision_trainer(ctx, model, kwargs)
    tokenizer = setup.tokenizer
    padding_free = config.sft_args.padding_free
    if padding_free:  # per-example attention, no dense mask (unless the user chose a kernel)
        kernel = attention.choose(model, config.run_conf.model_args.attn_implementation)
    if padding_free and not keeps_examples_apart(model, PaddingFreeCollator()):
        logger.warning(
            "this model/attention implementation does not keep packed examples apart: falling "
            "back to padded batches grouped by length"
        )
        padding_free = False
        attention.restore_sdpa(model)
        kwargs.setdefault("train_sampling_strategy", "group_by_length")
    # The LM head and loss only where a label is trained, when the model honours logits_to_keep.
    keep = not kwargs.get("use_liger_kernel") and keeps_trained_logits(model)
    if padding_free:
        logger.info("%s", attention.describe(kernel))
        collator: Any = PaddingFreeCollator(keep_trained_logits=keep)
        kwargs["include_num_input_tokens_seen"] = "all"  # a packed row has no padding
    else:
        eos = tokenizer.eos_token_id if setup.convert_pad_to_eos else None
        collator = PaddedCollator(
            tokenizer.pad_token_id, config.data_conf.padding_side, eos, keep_trained_logits=keep
        )
    callbacks = stages.callbacks(ctx)
    trainer = Trainer(
        model=model,
        args=arguments.build_training_arguments(TrainingArguments, kwargs),
        train_dataset=SFTDataset(data.train),
        eval_dataset=SFTDataset(data.valid) if data.valid is not None else None,
        data_collator=collator,
        callbacks=list(callbacks.all),
        compute_loss_func=None if kwargs.get("use_liger_kernel") else chunked_causal_lm_loss,
    )
    evaluation.attach(ctx, trainer, SFTDataset)  # per-source losses, eval_conf (if any)
    return trainer, callbacks
