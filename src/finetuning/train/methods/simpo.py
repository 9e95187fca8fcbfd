"""The SimPO recipe: plan → model → adapter → TRL's CPOTrainer (no reference model) → save.

SimPO is TRL's CPO trainer with ``loss_type: simpo`` (length-normalised log-probabilities and a
target margin ``simpo_gamma``) and ``cpo_alpha: 0`` (no behaviour-cloning term); both are the
method's defaults (``config/training_args.py: ENGINE_DEFAULTS["simpo"]``). TRL 1.16 keeps the
trainer in ``trl.experimental.cpo``.
"""

from __future__ import annotations

from typing import Any

from finetuning.config.loading import LoadedConfig
from finetuning.train.methods.paired import run_reference_free
from finetuning.train.reporting.summary import RunSummary


def run(loaded: LoadedConfig, cli_args: Any = None) -> RunSummary:
    """Train the model of ``loaded.config`` with SimPO on prompt / chosen / rejected rows.

    Returns:
        What the run did (steps, tokens, losses, reward accuracy and margin, outputs).

    Raises:
        UserError: Anything about the config, data or machine that the user must fix; raised
            before the model is loaded whenever it can be known by then.
    """
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    return run_reference_free(loaded, cli_args, CPOTrainer, CPOConfig)
