"""Reading training rows (chats, preferences, raw text) (JSONL, one JSON array, or see readers.py), checking every row strictly."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from finetuning.config.methods import METHODS, rows_of
from finetuning.data import images, readers, unpaired
from finetuning.data.messages import check_messages, check_tools, unknown_calls
from finetuning.errors import Problem, UserError

MAX_REPORTED = 20
METADATA_KEYS = ("dataset", "id", "tags", "labels")
SFT_KEYS = ("messages",)
DPO_KEYS = ("prompt_messages", "chosen_messages", "rejected_messages")
#: GRPO: the prompt only; every other key of the row goes to the reward functions.
PROMPT_KEYS = ("prompt_messages",)
TEXT_KEYS = ("text",)
#: The keys every row of a shape has (``config.methods.Method.rows``).
ROW_KEYS: dict[str, tuple[str, ...]] = {
    "chat": SFT_KEYS,
    "preference": DPO_KEYS,
    "prompt": PROMPT_KEYS,
    "unpaired": unpaired.KEYS,  # KTO; preference rows are accepted and unpaired
    "text": TEXT_KEYS,
}


def _method_with(shape: str) -> str:
    return next(m.name for m in METHODS.values() if m.rows == shape)


def _shape(keys: tuple[str, ...]) -> str:
    return ", ".join(f"`{k}`" for k in keys)


def read_rows(path: str | Path, method: str, config_key: str) -> list[dict[str, Any]]:
    """Read and check every row of one data file.

    Args:
        path: A JSONL file (or one JSON array of rows), compressed JSONL (``.jsonl.gz``,
            ``.jsonl.zst``), a Parquet file or a ``save_to_disk`` folder.
        method: The method; its row shape (``config.methods.rows_of``) decides the keys:
            ``messages`` (chat), ``prompt_messages``/``chosen_messages``/``rejected_messages``
            (preference).
        config_key: The config path that named the file, for the error message.

    Returns:
        The rows, each with its message lists (and metadata keys, if present).

    Raises:
        UserError: The file is missing or empty, or rows are malformed (up to the first 20
            problems, each as ``file:line: what is wrong``, or ``file row N: ...`` for tables).
    """
    path = Path(path)
    if readers.is_table(path):
        located = readers.read_table(path, config_key)
    else:
        located = [(f"{path}:{line}", record) for line, record in read_records(path, config_key)]
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    for where, record in located:
        if isinstance(record, Problem):
            problems.append(record)
        elif (message := _check_row(record, method)) or (
            message := images.attach(record, path.parent)
        ):
            problems.append(Problem(message, where))
        else:
            record["_where"] = where  # names the row in later errors
            found = [record]
            if rows_of(method) == "unpaired" and unpaired.is_paired(record):
                found = unpaired.unpair(record)  # one desirable, one undesirable example
            for row in found:
                if row.get("tools") and rows_of(method) != "text":
                    # Counted by the preflight: a call to an unlisted function is likely a data bug.
                    keys = [k for k in ROW_KEYS[rows_of(method)] if k != "label"]
                    warnings = [w for k in keys for w in unknown_calls(row[k], k, row["tools"])]
                    if warnings:
                        row["_warnings"] = warnings
                rows.append(row)
        if len(problems) >= MAX_REPORTED:
            break
    if problems:
        more = " (showing the first 20)" if len(problems) >= MAX_REPORTED else ""
        raise UserError(problems, header=f"{path} has malformed rows{more}:")
    if not rows:
        raise UserError(Problem(f"data file has no rows: {path}", config_key))
    return rows


def read_records(path: str | Path, config_key: str) -> list[tuple[int, Any]]:
    """(line, parsed object or :class:`Problem`) for each row of a (compressed) JSONL / JSON-array file.

    The rows are not checked; :func:`read_rows` checks them for training, the generate tool for
    prompting.

    Raises:
        UserError: The file is missing (named by ``config_key``), not a regular file, cannot be
            read, or is not valid UTF-8.
    """
    path = Path(path)
    return _parse(_read_text(path, config_key), path)


_KINDS = (
    (stat.S_ISDIR, "a folder, not a data file: name the .jsonl file inside it"),
    (stat.S_ISFIFO, "a named pipe (FIFO), not a regular file: write the rows to a file"),
    (stat.S_ISSOCK, "a socket, not a regular file"),
    (stat.S_ISCHR, "a character device, not a regular file"),
    (stat.S_ISBLK, "a block device, not a regular file"),
)


def _read_text(path: Path, config_key: str) -> str:
    """The file's text, or a user error saying what the path is or why it cannot be read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UserError(Problem(f"data file not found: {path}", config_key)) from None
    except OSError as exc:
        raise UserError(Problem(f"cannot read {path}: {exc.strerror or exc}", config_key)) from None
    for is_kind, what in _KINDS:
        if is_kind(mode):  # a FIFO would block the read, a folder fails it: say what it is
            raise UserError(Problem(f"{path} is {what}", config_key))
    if readers.is_compressed(path):
        return readers.decompressed_text(path)
    try:
        data = path.read_bytes()
    except PermissionError:
        raise UserError(
            Problem(f"cannot read {path}: permission denied (check the file's mode)", config_key)
        ) from None
    except OSError as exc:  # e.g. EIO from a failing disk or network filesystem mid-file
        raise UserError(
            Problem(f"cannot read {path}: {exc.strerror or exc} (errno {exc.errno})", config_key)
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            Problem(
                f"not valid UTF-8 (byte {exc.start}): is it a binary file? rows are JSON text, "
                "one object a line",
                f"{path}:{line}",
            )
        ) from None


_TOO_DEEP = "nested too deeply to read (a row is a few levels of objects and lists)"


def _parse(text: str, path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed object or Problem) for each row of the file."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            return [(exc.lineno, Problem(f"invalid JSON array: {exc.msg}", f"{path}:{exc.lineno}"))]
        except RecursionError:  # json recurses once per level
            return [(1, Problem(f"invalid JSON array: {_TOO_DEEP}", f"{path}:1"))]
        # A JSON array has no line per row; report positions as the row's index (1-based).
        return list(enumerate(array, start=1))
    records: list[tuple[int, Any]] = []
    # Rows end at "\n" only: str.splitlines() also splits at U+2028, U+0085 and other
    # separators that are legal inside a JSON string, which cut a valid row in two.
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            shown = line if len(line) <= 80 else line[:77] + "..."
            records.append(
                (number, Problem(f"invalid JSON ({exc.msg}): {shown}", f"{path}:{number}"))
            )
        except RecursionError:
            records.append((number, Problem(f"invalid JSON: {_TOO_DEEP}", f"{path}:{number}")))
    return records


def split_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at "\n" only, a "\r" before it dropped (CRLF files)."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last row; it does not start an empty one
    return lines


def _check_tools(record: dict[str, Any]) -> str:
    if record.get("tools") is not None:
        return check_tools(record["tools"])
    return ""


def _check_row(record: Any, method: str) -> str:
    """An empty string for a good row, else what is wrong with it."""
    if not isinstance(record, dict):
        return f"a row must be a JSON object, got {type(record).__name__}"
    shape = rows_of(method)
    if shape == "unpaired":
        if not unpaired.is_paired(record):
            return unpaired.check_row(record) or _check_tools(record)
        shape = "preference"  # checked as one, then unpaired
    keys = ROW_KEYS[shape]
    missing = [k for k in keys if k not in record]
    if missing:
        hint = ""
        # The other shape the row fits best: all of its keys present, the most of them first.
        fits = sorted(
            (len(other), other_shape)
            for other_shape, other in ROW_KEYS.items()
            if other_shape != shape and all(k in record for k in other)
        )
        if fits:
            hint = f" (this looks like a {_method_with(fits[-1][1])} row)"
        return f"missing `{'`, `'.join(missing)}`{hint}; a {method} row has {_shape(keys)}"
    if shape == "text":
        text = record["text"]
        if not isinstance(text, str):
            return f"`text` must be a string (one document), got {type(text).__name__}"
        if not text:
            return "`text` is empty: there is nothing to train"
        return ""
    for key in keys:
        allow_empty = key == "prompt_messages" and shape != "prompt"
        message = check_messages(record[key], key, allow_empty=allow_empty)
        if message:
            return message
    if message := _check_tools(record):
        return message
    if shape == "chat" and not any(m["role"] == "assistant" for m in record["messages"]):
        return "the conversation has no assistant turn, so nothing would be trained"
    if shape == "prompt" and record["prompt_messages"][-1]["role"] == "assistant":
        return (
            "`prompt_messages` ends with an assistant message: a GRPO prompt ends where the model "
            "is to answer (e.g. with the user's question)"
        )
    if shape == "preference":
        for key in ("chosen_messages", "rejected_messages"):
            if record[key][-1]["role"] != "assistant":
                return f"`{key}` must end with an assistant message"
    return ""
