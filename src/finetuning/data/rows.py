"""Reading training rows (chats, preferences, raw text) (JSONL, one JSON array, or see readers.py), checking every row strictly."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.config.methods import METHODS, rows_of
from finetuning.data import hub, images, readers, schemas, unpaired
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
    """Read and check every row of one data file (its format detected, see :func:`read_dataset`).

    Args:
        path: A JSONL file (or one JSON array of rows), compressed JSONL (``.jsonl.gz``,
            ``.jsonl.zst``), a Parquet file or a ``save_to_disk`` folder.
        method: The method; its row shape (``config.methods.rows_of``) decides the keys:
            ``messages`` (chat), ``prompt_messages``/``chosen_messages``/``rejected_messages``
            (preference), or one of the formats :mod:`finetuning.data.schemas` converts.
        config_key: The config path that named the file, for the error message.

    Returns:
        The rows, each with its message lists (and metadata keys, if present).

    Raises:
        UserError: The file is missing or empty, or rows are malformed (up to the first 20
            problems, each as ``file:line: what is wrong``, or ``file row N: ...`` for tables).
    """
    path = Path(path)
    return _checked_rows(_located(path, config_key), method, str(path), config_key).rows


@dataclass
class DatasetRows:
    """The checked rows of one dataset, the format they were read in and what identifies them.

    Attributes:
        rows: The rows in our shapes.
        format: The format's name (``data/schemas.py``).
        detected: Whether the format was detected (else the config's ``format:`` named it).
        fingerprint: For a dataset read by name, what identifies its rows (None: a local file,
            digested by the cache).
    """

    rows: list[dict[str, Any]]
    format: str
    detected: bool
    fingerprint: str | None = None


def read_dataset(dataset: Any, method: str, config_key: str) -> DatasetRows:
    """Read and check the rows of one dataset definition (``data_conf...datasets[i]``).

    Local files are read as :func:`read_rows` reads them; a dataset repository folder or a Hub
    id with ``datasets.load_dataset`` (:mod:`finetuning.data.hub`). ``columns`` are renamed
    first; then the rows are converted from their format (``format``, or detected from the first
    row that fits one) into our shapes and checked.

    Args:
        dataset: The dataset definition (``path``, ``format``, ``columns``, and the by-name keys).
        method: The method, which decides the shapes and formats allowed.
        config_key: The config path of ``path``.

    Raises:
        UserError: As :func:`read_rows`, and for a format the method cannot take, a row that fits
            two formats, or a dataset that cannot be loaded by name.
    """
    hub.check_keys(dataset, config_key)
    fingerprint = None
    if hub.is_by_name(dataset.path):
        loaded = hub.load_rows(dataset, config_key)
        located, fingerprint = loaded.located, loaded.fingerprint
    else:
        located = _located(Path(dataset.path), config_key)
    forced = None
    if getattr(dataset, "format", None):
        forced = schemas.FORMATS[dataset.format]
        if forced not in schemas.formats_for(method):
            raise UserError(
                Problem(
                    f"a {method} dataset cannot be in the {forced.name} format; it may be: "
                    f"{schemas.listing(method)}",
                    config_key.rsplit(".", 1)[0] + ".format",
                )
            )
    columns = getattr(dataset, "columns", None) or {}
    result = _checked_rows(located, method, dataset.path, config_key, forced, columns)
    result.fingerprint = fingerprint
    return result


def _located(path: Path, config_key: str) -> list[tuple[str, Any]]:
    if readers.is_table(path):
        return readers.read_table(path, config_key)
    return [(f"{path}:{line}", record) for line, record in read_records(path, config_key)]


def _detected(
    located: list[tuple[str, Any]], method: str, columns: dict[str, str]
) -> schemas.Format | None:
    """The format of the first row that fits one (None: no row does).

    Raises:
        UserError: That row fits two formats.
    """
    for where, record in located:
        if not isinstance(record, dict):
            continue
        try:
            fmt = schemas.detect(schemas.renamed(record, columns), method)
        except schemas.FormatError as exc:
            if "fits two formats" in str(exc):
                raise UserError(Problem(str(exc), where)) from None
            continue  # a column to rename is missing: reported with the row
        if fmt is not None:
            return fmt
    return None


def _row_problem(
    record: Any, method: str, fmt: schemas.Format | None, columns: dict[str, str]
) -> tuple[Any, str]:
    """(the row in our shape, "") for a good row, else (the record, what is wrong with it)."""
    if not isinstance(record, dict):
        return record, _check_row(record, method)
    try:
        record = schemas.renamed(record, columns)
        if fmt is not None:
            record = schemas.converted(record, fmt)
    except schemas.FormatError as exc:
        return record, str(exc)
    message = _check_row(record, method)
    if message and fmt is not None and fmt.convert is not None:
        message += f" (in the row converted from the {fmt.name} format)"
    elif message.startswith("missing `"):
        message += f"; the formats a {method} row may have: {schemas.listing(method)}"
    return record, message


def _checked_rows(
    located: list[tuple[str, Any]],
    method: str,
    name: str,
    config_key: str,
    forced: schemas.Format | None = None,
    columns: dict[str, str] | None = None,
) -> DatasetRows:
    columns = columns or {}
    fmt = forced or _detected(located, method, columns)
    base = Path(name) if Path(name).is_dir() else Path(name).parent  # relative image paths
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    for where, record in located:
        if isinstance(record, Problem):
            problems.append(record)
        elif (checked := _row_problem(record, method, fmt, columns))[1] or (
            checked := (checked[0], images.attach(checked[0], base))  # images as the row is read
        )[1]:
            problems.append(Problem(checked[1], where))
        else:
            record = checked[0]
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
        raise UserError(problems, header=f"{name} has malformed rows{more}:")
    if not rows:
        raise UserError(Problem(f"data file has no rows: {name}", config_key))
    return DatasetRows(rows, (fmt or schemas.own_format(method)).name, detected=forced is None)


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
