"""Datasets by name: Hugging Face Hub dataset ids and local dataset repositories.

A dataset ``path`` that is not a local file, and not a folder written by ``save_to_disk``, is read
with ``datasets.load_dataset``: a local dataset repository (a README card with ``configs``,
``data/train-*.parquet``, or plain data files) or a Hub id (``org/name``), which comes from the
Hugging Face cache when the network is off (``HF_HUB_OFFLINE=1``). The dataset's ``name`` (the
config or subset), ``split`` (default ``train``; slices such as ``train[:10%]``), ``revision`` and
``data_files`` go to ``load_dataset`` as they are. Rows are located as ``org/name[train] row 12``
(counting from 0, as ``dataset[12]`` does).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.config.paths import is_by_name
from finetuning.errors import Problem, UserError

#: Keys only a dataset read by name takes.
HUB_KEYS = ("name", "split", "revision", "data_files")


@dataclass
class HubRows:
    """The rows of a dataset read with ``load_dataset``, and what identifies them for the cache."""

    located: list[tuple[str, Any]]
    fingerprint: str


def check_keys(dataset: Any, config_key: str) -> None:
    """Refuse the by-name keys on a dataset that is a plain file (they would be ignored).

    Raises:
        UserError: ``name``, ``split``, ``revision`` or ``data_files`` is set for a file path.
    """
    given = [k for k in HUB_KEYS if k in getattr(dataset, "model_fields_set", ())]
    if given and not is_by_name(dataset.path):
        parent = config_key.rsplit(".", 1)[0]
        raise UserError(
            Problem(
                f"`{given[0]}` is for Hub datasets and dataset repository folders, but "
                f"{dataset.path} is a data file (or a save_to_disk folder): remove it",
                f"{parent}.{given[0]}",
            )
        )


def _where(dataset: Any) -> str:
    split = dataset.split or "train"
    return f"{dataset.path}{f' ({dataset.name})' if dataset.name else ''}[{split}]"


def load_rows(dataset: Any, config_key: str) -> HubRows:
    """The rows of a dataset given by name, located by row index.

    Args:
        dataset: The dataset definition (``path``, ``name``, ``split``, ``revision``,
            ``data_files``).
        config_key: The config path of ``path``, for errors.

    Raises:
        UserError: The id is unknown, the network is off and the dataset is not cached, or the
            subset or split does not exist.
    """
    import datasets

    kwargs = {
        "name": dataset.name,
        "split": dataset.split or "train",
        "revision": dataset.revision,
        "data_files": dataset.data_files,
    }
    try:
        loaded = datasets.load_dataset(
            dataset.path, **{k: v for k, v in kwargs.items() if v is not None}
        )
    except Exception as exc:  # datasets raises many kinds; each becomes one clear message
        raise UserError(Problem(_load_failure(dataset.path, exc), config_key)) from None
    from finetuning.data.readers import _without_nulls

    where = _where(dataset)
    located = [(f"{where} row {i}", _without_nulls(r)) for i, r in enumerate(loaded.to_list())]
    return HubRows(located, fingerprint(dataset, loaded))


def _load_failure(path: str, exc: Exception) -> str:
    """What a ``load_dataset`` failure means, for the user."""
    from datasets.exceptions import DatasetNotFoundError

    text = str(exc)
    if isinstance(exc, ConnectionError) or "OfflineModeIsEnabled" in text:
        offline = "OfflineModeIsEnabled" in text or "offline" in text.lower()
        why = (
            "the network is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)"
            if offline
            else "the Hugging Face Hub cannot be reached (no network?)"
        )
        return (
            f"cannot load the dataset {path!r}: there is no local file or folder of that name, "
            f"{why} and it is not in the Hugging Face cache; load it once with the network on, "
            "or give a local file or dataset folder"
        )
    if isinstance(exc, DatasetNotFoundError):
        return (
            f"the dataset {path!r} is unknown: it is not a local file or folder and the Hugging "
            "Face Hub has no dataset with that id (check the spelling; a private or gated "
            "dataset needs `hf auth login`)"
        )
    if "Unknown split" in text or "Bad split" in text:
        return f"the dataset {path!r} has no such split: {text} (set `split:`)"
    if "config" in text.lower() and ("not found" in text or "Couldn't find cache" in text):
        return f"the dataset {path!r} has no such subset: {text} (set `name:`)"
    return f"cannot load the dataset {path!r}: {type(exc).__name__}: {text}"


def fingerprint(dataset: Any, loaded: Any) -> str:
    """What identifies the loaded rows: the request, the resolved cache files and fingerprint.

    The cache folder of a Hub dataset is named after its resolved revision, and a local folder's
    files are digested, so a new revision or changed files give a new key.
    """
    parts: dict[str, Any] = {
        "path": dataset.path,
        "name": dataset.name,
        "split": dataset.split or "train",
        "revision": dataset.revision,
        "data_files": dataset.data_files,
        "fingerprint": getattr(loaded, "_fingerprint", None),
        "cache_files": [Path(f["filename"]).parent.name for f in loaded.cache_files],
    }
    if Path(dataset.path).is_dir():
        from finetuning.data.prepare import file_digest

        parts["files"] = file_digest(Path(dataset.path))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
