"""The reward-model recipe: plan → model → adapter → trainer → train → save.

Shaped like ``dpo.py``: the same stages in the same order, on the same preference rows. What is
its own: the model is the causal LM with a sequence-classification head of one output (the
score of a whole conversation, read at its last token), and TRL's ``RewardTrainer`` trains it so
that the chosen conversation scores above the rejected one (loss ``-log sigmoid(chosen -
rejected)``; it logs ``accuracy`` and ``margin``).

The data is ours, from the plan: each pair is ``prompt + chosen`` and ``prompt + rejected`` token
ids from our templates (the tokens of the whole conversation up to the end marker of its last
assistant turn). Handed to TRL as ``chosen_ids`` / ``rejected_ids``, which its
``_prepare_dataset`` takes as already tokenised (no re-tokenisation; its ``max_length`` filter
is switched off, since the plan already dropped the pairs that do not fit and counted them in
the preflight), so no hook of TRL's needs overriding.
"""

from __future__ import annotations

import logging
from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.data.prepare import EncodedSplit
from finetuning.errors import UserError
from finetuning.train import arguments, stages
from finetuning.train.reporting.summary import RunSummary

logger = logging.getLogger(__name__)


def pairs_dataset(split: EncodedSplit) -> Any:
    """A ``datasets.Dataset`` of ``chosen_ids`` / ``rejected_ids`` (each with the prompt)."""
    from datasets import Dataset

    store = split.store
    rows = []
    for i in split.indices:
        ids = store.triple(int(i))
        rows.append(
            {
                "chosen_ids": ids["prompt_ids"] + ids["chosen_ids"],
                "rejected_ids": ids["prompt_ids"] + ids["rejected_ids"],
            }
        )
    return Dataset.from_list(rows)


def check_score_head_trains(model: Any) -> None:
    """The score head must train: a fresh head is random, an untrained one scores noise.

    Raises:
        UserError: No parameter of the ``score`` layer is trainable (an adapter whose task type
            is not SEQ_CLS, e.g. a PRETRAINED_PEFT adapter of a causal LM).
    """
    names = [n for n, p in model.named_parameters() if p.requires_grad and ".score." in f".{n}"]
    if not names:
        raise UserError(
            "peft_conf: the reward model's score head would not train (the adapter does not "
            "include it): use an adapter with task_type SEQ_CLS, or peft_type NO_PEFT"
        )


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train a reward model from the model of ``loaded.config`` on preference pairs.

    Returns:
        What the run did (steps, tokens, losses, reward accuracy and margin, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl import RewardConfig, RewardTrainer

    # The plan (batch sizes, learning rate, outputs, hardware, resume, tracking, tokenizer and
    # preference data, prepared once and cached), then the model with its score head and the
    # adapter (SEQ_CLS: the score head trains in full beside it).
    ctx = stages.start(loaded, cli_args)
    if ctx.finished is not None:  # a relaunch of a complete run changes nothing
        return ctx.finished
    plan = ctx.plan
    data = plan.data
    model, _ = stages.prepare_model(ctx, score_head=True)
    check_score_head_trains(model)

    # Trainer: TRL's padded pairs (a sequence classifier reads the score at each row's last
    # token, so pairs are not packed).
    kwargs = stages.trainer_kwargs(ctx)
    kwargs["include_num_input_tokens_seen"] = "non_padding"
    kwargs["max_length"] = None  # the plan dropped the pairs longer than max_length already
    callbacks = stages.callbacks(ctx)
    trainer = RewardTrainer(
        model=model,
        args=arguments.build_training_arguments(RewardConfig, kwargs),
        train_dataset=pairs_dataset(data.train),
        eval_dataset=pairs_dataset(data.valid) if data.valid is not None else None,
        processing_class=plan.setup.tokenizer,
        callbacks=list(callbacks.all),
    )

    # Train, then save the final model (the adapter and score head for PEFT) and its tokenizer.
    return stages.train_and_save(ctx, trainer, callbacks)
