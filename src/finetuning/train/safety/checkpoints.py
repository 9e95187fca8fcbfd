"""Finding checkpoints and resolving ``run_conf.resume_from_checkpoint``."""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path

from finetuning.errors import UserError
from finetuning.model.weights import safetensors_problem

logger = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: Files (besides the weights) that the trainer loads on resume when they are present.
RESUME_STATE_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def checkpoint_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete, readable checkpoint (None when it is).

    The trainer writes ``trainer_state.json`` last, so a folder without it was interrupted
    mid-save; the state must parse, every safetensors file must be as long as its header says
    (a truncated file is not), and every other file the resume loads (optimizer, scheduler,
    scaler, RNG states: ``torch.save`` zip archives) must be a readable archive. A power loss
    can leave ``trainer_state.json`` written but ``optimizer.pt`` empty.
    """
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (interrupted while saving)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "trainer_state.json is truncated or corrupt"
    weights = list(folder.glob("*.safetensors"))
    if not weights:
        return "no weights (*.safetensors)"
    for path in weights:
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    for pattern in RESUME_STATE_FILES:
        for path in sorted(folder.glob(pattern)):
            problem = _torch_archive_problem(path)
            if problem:
                return f"{path.name}: {problem}"
    return None


def _torch_archive_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file cannot be loaded (None when it can be opened).

    Opening the zip reads its central directory at the end of the file, so a truncated file
    fails here without reading (possibly gigabytes of) optimizer state.
    """
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            if not archive.namelist():
                return "an empty archive"
    except zipfile.BadZipFile:
        return f"truncated or corrupt ({size} bytes)"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


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
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        logger.warning("skipping incomplete checkpoint %s: %s", folder, problem)
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
    problem = checkpoint_problem(path) if path.is_dir() else "no such folder"
    if problem:
        raise UserError(
            f"run_conf.resume_from_checkpoint: {setting!r} is not a complete checkpoint: {problem}"
        )
    return str(path)
