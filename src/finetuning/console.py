"""What every command-line entry point shares: logging setup and turning user errors into exit 2.

``finetuning`` (``cli.py``) and the companion console scripts (``merge_adapter``, ``generate``,
``create_vllm_compatible_adapter``) use these, so the tools need not import the CLI that
dispatches to them.

It also keeps a run's console to our lines and a progress bar: the libraries we build on warn on
every run about things the engine has already handled (the embedding resize is mean-initialised on
purpose, TRL's ``keep_end`` truncation is done by our own data preparation, bitsandbytes' optional
CPU kernels, ...). Those exact messages are filtered unless the user asks for
``--logging-level DEBUG``; every other warning stays visible.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

from finetuning.errors import UserError

EXIT_USER_ERROR = 2


def setup_logging(level: str) -> None:
    """Log to stderr at ``level``, each line prefixed with the rank in a multi-process run.

    Known-harmless library messages are filtered, unless ``level`` is DEBUG.
    """
    install_filters(level)
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


#: (logger name, text in the message) of log records that are known to be harmless here.
HARMLESS_LOGS: tuple[tuple[str, str], ...] = (
    # Mean-initialising the rows of added template tokens is what we ask for (and log).
    ("transformers.modeling_utils", "mean_resizing=False"),
    # The optional CPU 4-bit kernel package; bitsandbytes falls back to its own code.
    ("bitsandbytes", "pip install kernels"),
    ("bitsandbytes.backends.cpu.ops", "pip install kernels"),
    # DeepSpeed's import-time notice on machines without a GPU.
    ("DeepSpeed", "Setting accelerator to CPU"),
)

#: (category, message regex) of Python warnings that are known to be harmless here.
HARMLESS_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # We truncate DPO prompts ourselves (data/preference.py); TRL only sees the setting.
    (FutureWarning, r".*'keep_end'.* truncation mode is deprecated"),
    # Called by PEFT / TRL on today's transformers; nothing a user can change.
    (FutureWarning, r".*`is_gradient_checkpointing` is deprecated"),
    # ORPO and SimPO run TRL's experimental trainers; docs/preference-methods.md says so.
    (Warning, r"You are importing from 'trl\.experimental'"),
)


class _DropMessages(logging.Filter):
    def __init__(self, texts: list[str]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(text in message for text in self.texts)


def install_filters(level: str) -> None:
    """Filter the known-harmless library messages, unless ``level`` is DEBUG (then show all)."""
    if level == "DEBUG":
        return
    by_logger: dict[str, list[str]] = {}
    for name, text in HARMLESS_LOGS:
        by_logger.setdefault(name, []).append(text)
    for name, texts in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(texts))
    for category, pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
