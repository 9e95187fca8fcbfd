"""Data sources beyond plain JSONL: compressed JSONL, Parquet files and ``save_to_disk`` folders.

Compressed JSONL (``.jsonl.gz``, ``.jsonl.zst``, also ``.json.*``) is decompressed and read like
JSONL, so problems are still located by line. Parquet files and folders written by
``datasets.Dataset.save_to_disk`` hold tables: their rows are located by row index
(``file row 12``, counting from 0 as ``dataset[12]`` does).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

from finetuning.errors import Problem, UserError

COMPRESSED = (".gz", ".zst")
#: What a dataset ``path`` may be, for messages and the docs.
KINDS = (
    "a JSONL file (.jsonl, or one JSON array), compressed JSONL (.jsonl.gz, .jsonl.zst), a "
    "Parquet file (.parquet) or a folder written by datasets.Dataset.save_to_disk"
)


def is_compressed(path: Path) -> bool:
    return path.suffix in COMPRESSED


def is_table(path: Path) -> bool:
    """Parquet files and ``save_to_disk`` folders (anything else is read as JSON text)."""
    return path.suffix == ".parquet" or path.is_dir()


def decompressed_text(path: Path) -> str:
    """The UTF-8 text of a ``.gz`` or ``.zst`` file.

    Raises:
        UserError: The file is not valid compressed data or not UTF-8 inside.
    """
    try:
        if path.suffix == ".gz":
            data = gzip.decompress(path.read_bytes())
        else:
            data = _zstd_decompress(path)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise UserError(
            Problem(
                f"cannot decompress: {exc} (the file is truncated or corrupt: copy or "
                "compress it again)",
                str(path),
            )
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            Problem(f"not valid UTF-8 (byte {exc.start} decompressed)", f"{path}:{line}")
        ) from None


def _zstd_decompress(path: Path) -> bytes:
    try:
        import zstandard
    except ImportError:
        raise UserError(
            f"{path}: reading .zst files needs the zstandard package: "
            "pip install 'finetuning[zstd]' (or pip install zstandard)"
        ) from None
    try:
        return _zstd_frames(zstandard.ZstdDecompressor(), path.read_bytes())
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None


def _zstd_frames(decompressor: Any, data: bytes) -> bytes:
    """Every frame of a zstd stream, decompressed; a stream cut inside a frame is an error.

    zstandard's ``stream_reader`` returns what it could decode of a truncated file without
    complaint (a file cut at 60% loads half its rows), so each frame is decoded on its own and
    must reach its end.

    Raises:
        EOFError: The data ends inside a frame (truncated).
    """
    parts = []
    while data:
        frame = decompressor.decompressobj()
        parts.append(frame.decompress(data))
        if not frame.eof:
            raise EOFError("the zstd stream ends inside a frame")
        data = frame.unused_data
    return b"".join(parts)


def _without_nulls(value: Any) -> Any:
    """Drop null fields: columnar formats fill a field absent from a row with null."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def read_table(path: Path, config_key: str) -> list[tuple[str, Any]]:
    """(where, row) for each row of a Parquet file or a ``save_to_disk`` folder.

    Raises:
        UserError: The file or folder is missing or not readable as a table.
    """
    if not path.exists():
        raise UserError(Problem(f"data file not found: {path}", config_key))
    if path.is_dir():
        records = _read_saved_dataset(path, config_key)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise UserError(Problem(f"not a readable Parquet file: {exc}", str(path))) from None
    return [(f"{path} row {i}", _without_nulls(r)) for i, r in enumerate(records)]


def _read_saved_dataset(path: Path, config_key: str) -> list[dict[str, Any]]:
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise UserError(
            Problem(
                f"{path} holds a DatasetDict with the splits {', '.join(splits)}: point the path "
                f"at one of them (e.g. {path / (splits[0] if splits else 'train')})",
                config_key,
            )
        )
    if not (path / "state.json").is_file():
        raise UserError(
            Problem(
                f"{path} is a folder but not one written by save_to_disk: use {KINDS}", config_key
            )
        )
    from datasets import load_from_disk

    try:
        return load_from_disk(str(path)).to_list()
    except (OSError, ValueError) as exc:
        raise UserError(Problem(f"cannot load the saved dataset: {exc}", str(path))) from None


def content_files(path: Path) -> list[Path]:
    """The files whose bytes make up a data source (for cache keys): the file, or a folder's."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]
