"""Saving the final model so that the final folder is complete or absent, never half-written.

The model and tokenizer go to a temporary sibling folder (``.<name>.partial``) that is renamed
to the final name once both are written. A SIGTERM or Ctrl-C meanwhile is deferred until the
save is done (:func:`finetuning.train.safety.interrupts.deferred`); a process killed outright leaves at
most the temporary folder, which the next save replaces.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetuning.train.safety import interrupts

logger = logging.getLogger(__name__)


def partial_dir(final_dir: Path) -> Path:
    """The temporary folder the final model is written to first."""
    return final_dir.with_name(f".{final_dir.name}.partial")


def _replace_dir(source: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)  # a previous final model (a relaunched run): replaced as a whole
    source.rename(target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def save_final(trainer: Any, final_dir: Path, save_tokenizer: Callable[[Path], None]) -> None:
    """Save the trained model with ``trainer`` and the tokenizer with ``save_tokenizer``.

    Every process calls this (sharded models are gathered by the trainer); only the main
    process writes.

    Args:
        trainer: The trainer after training.
        final_dir: The final folder (``output_dir / final_checkpoint_name``).
        save_tokenizer: Writes the inference tokenizer into the folder it is given.
    """
    tmp = partial_dir(final_dir)
    main = trainer.is_world_process_zero()
    with interrupts.deferred("the final save"):
        if main and tmp.exists():
            shutil.rmtree(tmp)  # left by a run killed while saving
        trainer.accelerator.wait_for_everyone()
        trainer.save_model(str(tmp))
        if main:
            save_tokenizer(tmp)
            _replace_dir(tmp, final_dir)
            logger.info("saved the final model to %s", final_dir)
        trainer.accelerator.wait_for_everyone()
