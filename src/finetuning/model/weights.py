"""Whether model weight files are whole: checked before loading, and before resuming a checkpoint.

A safetensors file starts with its header length and a JSON header giving each tensor's byte
range, so a file cut short (an interrupted copy, download or save) is recognised from its size
alone, without reading the tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from finetuning.errors import UserError


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be loaded whole (None when its header and length agree)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated"
        header_len = struct.unpack("<Q", head)[0]
        if header_len > size - 8:
            return "truncated header"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "corrupt header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end > size:
        return f"truncated ({size} bytes, needs {8 + header_len + end})"
    return None


def check_weight_files(source: str | Path, key: str) -> None:
    """Before loading a local model folder: every safetensors file must be complete.

    A truncated file (an interrupted copy or download) otherwise fails deep in safetensors
    ("incomplete metadata, file not fully covered") without naming the file.

    Raises:
        UserError: A weights file is truncated or corrupt (the file is named).
    """
    folder = Path(source)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.safetensors")):
        try:
            problem = safetensors_problem(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problem = f"unreadable ({exc})"
        if problem:
            raise UserError(
                f"{key}: the weights file {path} is {problem}: it was not copied or downloaded "
                "completely; copy it again"
            )
