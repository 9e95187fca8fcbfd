"""Finding checkpoints and resolving ``run_conf.resume_from_checkpoint``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from finetuning.errors import UserError

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def is_complete(folder: Path) -> bool:
    """Whether a checkpoint folder holds a resumable trainer state."""
    return (folder / "trainer_state.json").is_file()


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete ``checkpoint-<digits>`` folder with the highest step, if any.

    Incomplete folders (no trainer state) are skipped, and the skip is logged.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted(
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))
    )
    for _, folder in reversed(found):
        if is_complete(folder):
            return folder
        logger.warning("skipping incomplete checkpoint %s (no trainer_state.json)", folder)
    return None


def resolve_resume(setting: bool | str, output_dir: str | Path) -> str | None:
    """The checkpoint to resume from, or None for a fresh run.

    Args:
        setting: false (fresh), true (latest, error if none), "auto" (latest if any), or a path.
        output_dir: Where the run's checkpoints are.

    Raises:
        UserError: true with no checkpoint, or a path that is not a checkpoint.
    """
    if setting is False:
        return None
    if setting is True or setting == "auto":
        latest = latest_checkpoint(output_dir)
        if latest is None and setting is True:
            raise UserError(
                f"run_conf.resume_from_checkpoint: true, but {output_dir} has no checkpoint-N "
                "folder to resume from (use 'auto' to start fresh when there is none)"
            )
        if latest is not None:
            logger.info("resuming from %s", latest)
        return str(latest) if latest else None
    path = Path(setting)
    if not is_complete(path):
        raise UserError(
            f"run_conf.resume_from_checkpoint: {setting!r} is not a complete checkpoint folder "
            "(no trainer_state.json)"
        )
    return str(path)
