"""Writing the run's files safely: atomic replacement, and a full disk as a user error.

A disk that fills while a checkpoint, the data cache or a report is written surfaces deep in a
library (``RuntimeError: [enforce fail at inline_container.cc:672]`` from ``torch.save``,
``OSError: [Errno 28]`` elsewhere). :func:`no_space_error` turns those into one message naming
the folder ("no space left on <dir>"), exit 2; the checkpoints saved before stay as they are
(the trainer deletes old checkpoints only after a new one is complete, and a resume skips an
incomplete one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from finetuning.errors import UserError

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: Text of torch's zip writer failures (it drops the errno).
TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed")

#: The output directory of the run in this process (the folder a full disk is reported on when
#: the error itself names no file).
_output_dir: Path | None = None


def watch(output_dir: Path) -> None:
    """Remember the run's output directory for :func:`no_space_error`."""
    global _output_dir
    _output_dir = Path(output_dir)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _free(folder: Path) -> str:
    for candidate in (folder, *folder.parents):
        try:
            return f"{shutil.disk_usage(candidate).free / 2**20:.1f} MiB free"
        except OSError:
            continue
    return "free space unknown"


def no_space_error(exc: BaseException) -> UserError | None:
    """The user error for a write that failed for lack of space, or None for other errors."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in NO_SPACE_ERRNOS:
            name = cause.filename or cause.filename2
            folder = Path(os.fsdecode(name)).parent if name else _output_dir
            break
        if isinstance(cause, RuntimeError) and any(t in str(cause) for t in TORCH_WRITE_FAILURES):
            folder = _output_dir
            break
    else:
        return None
    where = str(folder) if folder is not None else "the output disk"
    free = f" ({_free(folder)})" if folder is not None else ""
    return UserError(
        f"no space left on {where}{free}: a write failed there. Free some space (or choose "
        "another training_args.output_dir / FINETUNING_CACHE_DIR) and run the same command again; "
        "the checkpoints saved before are intact and resume_from_checkpoint: auto continues from "
        "the latest complete one"
    )


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text file that replaces ``path`` when the block ends: the file is whole or unchanged.

    The text goes to a temporary file beside ``path`` (its folder is created), renamed over
    ``path`` at the end; an error or Ctrl-C inside the block leaves an existing ``path`` as it
    was. The one atomic write of the package (the tools use it too: it imports only ``errors``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: the file is whole or unchanged."""
    with atomic_writer(path) as f:
        f.write(text)
