"""The continued-pretraining recipe: plan → model → adapter → trainer → train → save.

The SFT recipe's stages in the same order, on another kind of data: raw-text documents
(``{"text": ...}``), tokenised without a chat template, every token trained, an EOS closing each
document and long documents cut into chunks (``sft_args.length_handling: chunk``, the default
here); see :mod:`finetuning.data.text`. The plan prepares that data (mixing, splitting, the
cache and the preflight as for SFT); from there on the examples are SFT's: the same padding-free
packing, loss and ``Trainer`` (:func:`finetuning.train.methods.sft.causal_lm_trainer`).
"""

from __future__ import annotations

from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.train import stages
from finetuning.train.methods.sft import causal_lm_trainer
from finetuning.train.reporting.summary import RunSummary


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Continue pretraining the model of ``loaded.config`` on raw text.

    Returns:
        What the run did (steps, tokens, losses, where the outputs are).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    # The plan (batch sizes, learning rate, outputs, resume, tracking, tokenizer and the
    # documents, encoded and chunked once and cached), then model and adapter.
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    model, _ = stages.prepare_model(ctx)
    trainer, callbacks = causal_lm_trainer(ctx, model)
    # Train, then save the final model (the adapter for PEFT) with its tokenizer.
    return stages.train_and_save(ctx, trainer, callbacks)
