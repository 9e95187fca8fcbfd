"""An exclusive lock on the output directory for the lifetime of a run.

Two runs writing checkpoints into one folder interleave them (checkpoint-2 and -4 from one run,
checkpoint-6 from the other) and both exit 0. The main process of a run therefore holds
``<output_dir>/.finetuning.lock`` from the start of the run until it ends: an ``flock`` on the
open file (the kernel releases it when the process dies, however it dies), plus the holder's
host, pid and start time written into the file so that a refused run can say who holds it.

Only the main process takes the lock; the other ranks of the same distributed run write nothing
there and never look at it, so they share the main process's lock.

A lock file whose ``flock`` is free was left by a process that is gone (SIGKILL, power loss):
it is taken over with a message naming the previous holder. On the same host the holder's pid
is checked too, so that a filesystem without working ``flock`` still refuses a live holder.
"""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from finetuning.errors import UserError

logger = logging.getLogger(__name__)

LOCK_NAME = ".finetuning.lock"

#: The lock this process holds: (path, open file descriptor).
_held: tuple[Path, int] | None = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    if not data.strip():
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        return {"host": "?", "pid": 0, "started": "?"}
    return holder if isinstance(holder, dict) else None


def describe(holder: dict[str, Any]) -> str:
    """ "pid 123 on host h (started 2026-01-01 10:00:00 UTC)"."""
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(started {holder.get('started', '?')})"
    )


def _flock(fd: int) -> bool | None:
    """True: locked; False: someone holds it; None: the filesystem does not support locks."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


def _open_locked(path: Path) -> tuple[int, bool | None]:
    """Open (creating) the lock file and try to lock it.

    A run that ends unlinks the file after emptying it; one that opened the old file just
    before then locks a file no longer in the folder, so it retries on the new one.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        locked = _flock(fd)
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same or not locked:
            return fd, locked
        os.close(fd)


def acquire(output_dir: Path, is_main: bool = True) -> Path | None:
    """Take the run's lock on ``output_dir`` (main process only); returns the lock file.

    Raises:
        UserError: Another live run holds the lock (it is named).
    """
    global _held
    if not is_main:
        return None
    path = Path(output_dir) / LOCK_NAME
    if _held is not None and _held[0] == path:
        return path  # the same process running again (in-process callers)
    release()
    output_dir.mkdir(parents=True, exist_ok=True)
    fd, locked = _open_locked(path)
    try:
        holder = _read_holder(fd)
        host = socket.gethostname()
        same_host_alive = (
            holder is not None
            and holder.get("host") == host
            and isinstance(holder.get("pid"), int)
            and holder["pid"] != os.getpid()
            and _pid_alive(holder["pid"])
        )
        if locked is False or (same_host_alive and locked is None):
            who = describe(holder) if holder else "another process"
            raise UserError(
                f"training_args.output_dir: {output_dir} is in use by another run: {who}. "
                "Two runs in one folder would interleave their checkpoints: wait for it to end, "
                "stop it, or choose another output_dir"
            )
        if locked is None:
            logger.warning(
                "the filesystem of %s does not support file locks: concurrent runs there are "
                "detected only on this host",
                output_dir,
            )
        if holder is not None:
            logger.warning(
                "taking over the lock %s left by %s: that run is no longer running",
                path,
                describe(holder),
            )
        record = {
            "host": host,
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    _held = (path, fd)
    return path


def release() -> None:
    """Give the lock back (the end of the run); a no-op when none is held."""
    global _held
    if _held is None:
        return
    path, fd = _held
    _held = None
    try:
        # Empty it before unlocking: a run that starts in between then sees no holder.
        os.ftruncate(fd, 0)
        path.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        os.close(fd)


atexit.register(release)
