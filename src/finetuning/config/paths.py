"""The path fields of a config: ``~`` is expanded once at load; ``$VAR`` is not expanded.

Expanding ``~`` in one place matters because the fields reach code that treats them
differently (transformers expands ``~`` in ``output_dir``, ``pathlib`` does not): without it,
``output_dir: ~/runs/t`` put checkpoints in ``$HOME/runs/t`` and the final model in ``./~/runs/t``.
Environment variables are deliberately left alone: a config then means the same thing in every
shell, and the resolved config written beside the checkpoints is the one that ran. A path
that still holds ``$NAME`` and does not exist is reported as such. Relative paths are kept
relative, so they resolve against the current directory (not the config file's folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

#: Where path values live in the config; "*" is every item of a list.
PATH_FIELDS: tuple[tuple[str, ...], ...] = (
    ("data_conf", "training_data", "datasets", "*", "path"),
    ("data_conf", "validation_data", "datasets", "*", "path"),
    ("run_conf", "model"),
    ("run_conf", "tokenizer"),
    ("run_conf", "resume_from_checkpoint"),
    ("run_conf", "model_args", "cache_dir"),
    ("run_conf", "model_args", "offload_folder"),
    ("peft_conf", "name_or_path"),
    ("training_args", "output_dir"),
    ("training_args", "logging_dir"),
    ("training_args", "deepspeed"),
    ("tracking", "mlflow_server_uri"),
)

_ENV_VAR = re.compile(r"\$(\{\w+\}|\w+)")


def expand_home(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with ``~`` expanded in every path field (copied where changed, never mutated)."""
    for pattern in PATH_FIELDS:
        data = _expand_at(data, pattern)
    return data


def _expand_at(node: Any, pattern: tuple[str, ...]) -> Any:
    if not pattern:
        if isinstance(node, str) and node.startswith("~"):
            return os.path.expanduser(node)
        return node
    head, rest = pattern[0], pattern[1:]
    if head == "*":
        if not isinstance(node, list):
            return node
        return [_expand_at(item, rest) for item in node]
    if not isinstance(node, dict) or head not in node:
        return node
    value = _expand_at(node[head], rest)
    return node if value is node[head] else {**node, head: value}


def path_values(data: Any) -> list[tuple[list[Any], str]]:
    """(config path parts, value) of every string in a path field of ``data``."""
    found: list[tuple[list[Any], str]] = []
    for pattern in PATH_FIELDS:
        stack: list[tuple[Any, list[Any], tuple[str, ...]]] = [(data, [], pattern)]
        while stack:
            node, parts, rest = stack.pop()
            if not rest:
                if isinstance(node, str):
                    found.append((parts, node))
            elif rest[0] == "*" and isinstance(node, list):
                stack += [(item, [*parts, i], rest[1:]) for i, item in enumerate(node)]
            elif isinstance(node, dict) and rest[0] in node:
                stack.append((node[rest[0]], [*parts, rest[0]], rest[1:]))
    return found


def unexpanded_variable(value: str) -> str:
    """A message when ``value`` names an environment variable and does not exist, else ""."""
    match = _ENV_VAR.search(value)
    if match is None or os.path.exists(value):
        return ""
    return (
        f"path does not exist: {value!r}; environment variables such as {match.group(0)} are not "
        "expanded in a config: write the path out (or fill the config in first, e.g. with envsubst)"
    )


#: Path fields that name a folder the run writes into.
FOLDER_FIELDS = (("training_args", "output_dir"), ("training_args", "logging_dir"))


def not_a_folder(value: str) -> str:
    """A message when ``value`` exists but is not a folder (so nothing can be written in it)."""
    if not os.path.exists(value) or os.path.isdir(value):
        return ""
    return f"cannot write into {value!r}: it is a file, not a folder (choose another path)"


def _plain_folder_name(value: str) -> str:
    if value in ("", ".", "..") or any(c in value for c in "/\\\0") or value.startswith("~"):
        raise ValueError(
            f"must be a plain folder name inside output_dir (no '/', '\\', '~', '.' or '..'), "
            f"got {value!r}"
        )
    return value


#: A folder name inside ``output_dir``: anything else would write outside it (``..`` wrote the
#: adapter into the parent folder, over the user's files).
FolderName = Annotated[str, AfterValidator(_plain_folder_name)]


#: ``name`` or ``org/name`` as the Hub spells dataset ids.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
#: Suffixes that make a missing path a missing file, not a Hub id.
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".zst", ".parquet", ".arrow", ".csv")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def is_by_name(path: str) -> bool:
    """Whether ``path`` is read with ``load_dataset``: a dataset repository folder or a Hub id."""
    local = Path(path)
    if local.is_dir():  # a repository: a card or data files (an empty folder is a mistake)
        return not _is_saved_dataset(local) and (
            (local / "README.md").is_file()
            or any(p.name.endswith(_FILE_SUFFIXES) for p in local.rglob("*") if p.is_file())
        )
    if local.exists() or path.startswith((".", "/", "~")):
        return False
    return bool(_HUB_ID.fullmatch(path)) and not path.endswith(_FILE_SUFFIXES)
