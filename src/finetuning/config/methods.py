"""The training methods: one row per method, the one place the CLI, loading and docs list them.

A method is a subcommand (``finetuning <name> CONFIG``), a ``method:`` value in the config, a
config model (``config/experiment.py: CONFIG_CLASSES``), a library config class whose fields
``training_args`` takes, a row shape for its data and a recipe module beside ``train/methods/sft.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """What the engine needs to know about a training method.

    Attributes:
        name: The subcommand and the config's ``method`` value.
        title: What it does, in words (the subcommand's help).
        rows: The shape of its data rows: "chat" (``messages``), "preference"
            (``prompt_messages``/``chosen_messages``/``rejected_messages``), "unpaired"
            (``prompt_messages``/``completion_messages``/``label``; preference rows are unpaired),
            "prompt" (``prompt_messages`` plus any keys the reward functions read), "text"
            (``text``: one raw document).
        data_type: The ``data_type`` the method sets on every data input.
        library_config: ``module:Class`` of the library config that ``training_args`` fills.
        recipe: The module whose ``run(loaded, cli_args)`` trains with this method.
        plan: The module of the method's own plan checks, beside its recipe (see
            :mod:`finetuning.train.methods.hooks`), or None when the shared plan is all it needs.
            It must stay light to import: `validate` loads it, the recipe's libraries it must not.
    """

    name: str
    title: str
    rows: str
    data_type: str
    library_config: str
    recipe: str
    plan: str | None = None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "sft",
            "supervised fine-tuning",
            "chat",
            "ChatConversation",
            "transformers:TrainingArguments",
            "finetuning.train.methods.sft",
        ),
        Method(
            "dpo",
            "direct preference optimisation",
            "preference",
            "DirectPreference",
            "trl:DPOConfig",
            "finetuning.train.methods.dpo",
        ),
        Method(
            "kto",
            "Kahneman-Tversky optimisation from unpaired desirable/undesirable feedback",
            "unpaired",
            "UnpairedPreference",
            "trl:KTOConfig",
            "finetuning.train.methods.kto",
            "finetuning.train.methods.kto_plan",
        ),
        Method(
            "orpo",
            "odds ratio preference optimisation (no reference model)",
            "preference",
            "DirectPreference",
            "trl.experimental.orpo:ORPOConfig",
            "finetuning.train.methods.orpo",
        ),
        Method(
            "simpo",
            "simple preference optimisation (TRL's CPO trainer, loss_type simpo; no reference model)",
            "preference",
            "DirectPreference",
            "trl.experimental.cpo:CPOConfig",
            "finetuning.train.methods.simpo",
        ),
        Method(
            "grpo",
            "group relative policy optimisation (online RL from reward functions)",
            "prompt",
            "PromptOnly",
            "trl:GRPOConfig",
            "finetuning.train.methods.grpo",
            "finetuning.train.methods.grpo_plan",
        ),
        Method(
            "reward",
            "reward modelling (a score head ranks chosen above rejected)",
            "preference",
            "DirectPreference",
            "trl:RewardConfig",
            "finetuning.train.methods.reward",
        ),
        Method(
            "pretrain",
            "continued pretraining on raw text",
            "text",
            "RawText",
            "transformers:TrainingArguments",
            "finetuning.train.methods.pretrain",
        ),
    )
}


def rows_of(method: str) -> str:
    """The row shape of ``method``'s data (see :class:`Method`)."""
    return METHODS[method].rows
