"""What every command-line entry point shares: logging setup and turning user errors into exit 2.

``finetuning`` (``cli.py``) and the companion console scripts (``merge_adapter``, ``generate``,
``create_vllm_compatible_adapter``) use these, so the tools need not import the CLI that
dispatches to them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from finetuning.errors import UserError

EXIT_USER_ERROR = 2


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, each line prefixed with the rank in a multi-process run."""
    rank = os.environ.get("RANK")
    prefix = (
        f"[rank {rank}] " if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else ""
    )
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def report_user_error(exc: UserError) -> int:
    """Print a user error as one message (no traceback); returns the exit code for it."""
    print(f"error: {exc.format()}", file=sys.stderr)
    return EXIT_USER_ERROR


def run_tool(action: Callable[[], int]) -> int:
    """Run a companion console script with the same logging and exit codes as `finetuning`."""
    setup_logging("INFO")
    try:
        return action()
    except UserError as exc:
        return report_user_error(exc)
