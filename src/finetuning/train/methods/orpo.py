"""The ORPO recipe: plan → model → adapter → TRL's ORPOTrainer (no reference model) → save.

ORPO adds an odds-ratio term to the language-modelling loss of the chosen answer, so it needs
neither an SFT stage before it nor a reference model. TRL 1.16 keeps the trainer in
``trl.experimental.orpo``.
"""

from __future__ import annotations

from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.train.methods.paired import run_reference_free
from finetuning.train.reporting.summary import RunSummary


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with ORPO on prompt / chosen / rejected rows.

    Returns:
        What the run did (steps, tokens, losses, log-odds ratio and rewards, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return run_reference_free(loaded, cli_args, ORPOTrainer, ORPOConfig)
