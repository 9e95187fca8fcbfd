"""Importing the user's reward functions: built-ins, ``module:function`` and ``file.py:function``.

Each user module is imported once per process, its top level guarded (:func:`_guarded_import`):
whatever it does at import (raise, ``sys.exit``, argparse, ``input()``, Ctrl-C) is a
:class:`UserError` naming the config path (``grpo_args.rewards[i].function``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from finetuning.errors import Problem, UserError, did_you_mean
from finetuning.train.methods.rewards import BUILTINS

_MODULES: dict[str, Any] = {}  # path or module name -> module: each user module imported once


class _Tee:
    """Writes to ``stream`` and keeps the end of what was written (the error quotes its last
    line); a logging handler the module made on it stays usable after the import."""

    def __init__(self, stream: Any):
        self.stream, self.tail = stream, ""

    def write(self, text: str) -> int:
        self.tail = (self.tail + text)[-4096:]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _guarded_import(what: str, where: str) -> Iterator[None]:
    """Run a user module's top level so that nothing it does at import ends the run unnamed.

    A reward file is often a script: at import it may call ``sys.exit``, read ``input()`` or run
    an argparse ``parse_args()`` on the engine's own command line. While it is imported,
    ``sys.argv`` is just its name and stdin is empty (``input()`` raises EOFError instead of
    waiting); what it prints to stderr still goes there, and its last line is quoted in the
    error (argparse's reason).

    Raises:
        UserError: The import raised, exited or was interrupted, naming ``where``.
    """
    saved = sys.argv, sys.stdin
    sys.argv, sys.stdin = [what], io.StringIO()
    captured = _Tee(sys.stderr)
    failure: str | None = None
    try:
        with contextlib.redirect_stderr(captured):  # type: ignore[type-var]
            yield
    except UserError:
        raise
    except SystemExit as exc:
        failure = (
            f"importing {what} called sys.exit({exc.code!r}) (an argparse parse_args() at "
            "import does this: keep script code under `if __name__ == '__main__':`)"
        )
    except KeyboardInterrupt:
        failure = f"importing {what} was interrupted (KeyboardInterrupt)"
    except Exception as exc:
        failure = f"importing {what} raised {type(exc).__name__}: {exc}"
        if isinstance(exc, EOFError):
            failure += " (it reads input() at import; a reward file cannot read input)"
    finally:
        sys.argv, sys.stdin = saved
    said = [line for line in captured.tail.splitlines() if line.strip()]
    if failure is None:
        return
    if said:
        failure += f"; it printed: {said[-1].strip()}"
    raise UserError(Problem(failure, where))


def _import_file(text: str, base: Path, where: str) -> Any:
    path = Path(text)
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    key = str(path)
    if key in _MODULES:
        return _MODULES[key]
    if not path.is_file():
        raise UserError(Problem(f"reward file not found: {path}", where))
    stem = re.sub(r"\W", "_", path.stem)
    name = f"finetuning_user_rewards_{len(_MODULES)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a loader
        raise UserError(Problem(f"cannot import {path}", where))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        with _guarded_import(str(path), where):
            spec.loader.exec_module(module)
    except UserError:
        del sys.modules[name]
        raise
    _MODULES[key] = module
    return module


def _import_module(name: str, where: str) -> Any:
    if name in _MODULES:
        return _MODULES[name]
    with _guarded_import(name, where):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise UserError(
                Problem(
                    f"module {name!r} not found ({exc}): install it, put it on PYTHONPATH, or "
                    "give a file as path/to/file.py:function",
                    where,
                )
            ) from None
    _MODULES[name] = module
    return module


def resolve_function(text: str, base: Path, where: str) -> Callable[..., Any]:
    """The callable ``text`` names (built-in, ``module:function`` or ``file.py:function``).

    Raises:
        UserError: The module, file or function is missing, or it is not a plain callable.
    """
    if text in BUILTINS:
        return BUILTINS[text]
    target, _, attr = text.rpartition(":")
    module = (
        _import_file(target, base, where)
        if target.endswith(".py")
        else _import_module(target, where)
    )
    function = getattr(module, attr, None)
    if function is None:
        names = [n for n in vars(module) if not n.startswith("_") and callable(vars(module)[n])]
        raise UserError(
            Problem(f"{target} has no function {attr!r}", where, did_you_mean(attr, names))
        )
    if not callable(function):
        raise UserError(Problem(f"{text} is a {type(function).__name__}, not a function", where))
    if inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - a callable instance's method
    ):
        raise UserError(Problem(f"{text} is async: give a plain (synchronous) function", where))
    return function
