"""From the data config to training and validation sets: read, mix, encode (cached), split.

The encoded rows are cached on disk, keyed on everything that shapes them: the data files'
contents, the tokenizer (vocabulary, special tokens, template), the chat template name, the
length settings and the engine version. A second run with the same inputs loads the cache; a
changed input never reuses a stale one. Set ``FINETUNING_CACHE_DIR`` to choose where it goes
(default: ``$XDG_CACHE_HOME/finetuning`` or ``~/.cache/finetuning``).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetuning import __version__
from finetuning.config.data import ChatTrainValidConfig, source_labels
from finetuning.config.methods import rows_of
from finetuning.data import sources
from finetuning.data.encode import (
    IDENTICAL,
    NOTHING_TRAINED,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    TokenStore,
    encode_chunk,
    encode_rows,
)
from finetuning.data.preference import PreferenceStore, encode_preference_chunk
from finetuning.data.prompts import encode_prompt_chunk
from finetuning.data.readers import content_files
from finetuning.data.rows import read_dataset
from finetuning.data.text import chunk_split, encode_text_chunk
from finetuning.data.unpaired import UnpairedStore, encode_unpaired_chunk
from finetuning.data.vision import encoder_for
from finetuning.errors import UserError

logger = logging.getLogger(__name__)

CACHE_FORMAT = 4  # 3: KTO marks identical pairs; 4: examples per turn (data.history)


def cache_root() -> Path:
    """Where encoded data is cached (``FINETUNING_CACHE_DIR`` or the user's cache dir)."""
    if os.environ.get("FINETUNING_CACHE_DIR"):
        return Path(os.environ["FINETUNING_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "finetuning" / "data"


@dataclass
class SourceInfo:
    """One data file and how many rows it gave."""

    key: str
    path: str
    rows: int
    #: The format the rows were read in (``data/schemas.py``) and whether it was detected.
    format: str = ""
    detected: bool = True


@dataclass
class EncodedSplit:
    """A training or validation set: positions into a shared :class:`TokenStore`."""

    store: TokenStore | PreferenceStore | UnpairedStore
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def lengths(self) -> np.ndarray:
        return self.store.lengths()[self.indices]


@dataclass
class PreparedData:
    """The result of data preparation, with the facts the preflight report shows."""

    train: EncodedSplit
    valid: EncodedSplit | None
    sources: list[SourceInfo]
    rows: list[dict[str, Any]]
    mixed_rows: int
    status_counts: dict[str, int]
    cache_hit: bool
    cache_path: Path | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    # Evaluation (docs/evaluating.md): per-source validation sets and the mixture table.
    valid_parts: dict[str, EncodedSplit] = field(default_factory=dict)
    """The validation set by source label, when it comes from two sources or more."""
    mixture: list[dict[str, Any]] = field(default_factory=list)
    """PRECOMPUTE_WEIGHTED_MIX: per source, rows and tokens requested and realized."""


def file_digest(path: Path) -> str:
    """The sha256 of a data file's bytes (of a folder's files and their names).

    Computed once per process for unchanged files (same paths, sizes and modification times).
    """
    root = path.resolve()
    stamp = tuple(
        (str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in content_files(path)
    )
    return _digest(str(root), stamp)


@functools.lru_cache(maxsize=256)
def _digest(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in stamp:
        file = Path(name)
        if name != root:
            h.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A digest of everything in the tokenizer that changes how text encodes."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    h.update(repr(sorted(tokenizer.special_tokens_map.items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    h.update(repr(tokenizer("a", add_special_tokens=True)["input_ids"]).encode())
    return h.hexdigest()


def cache_key(
    paths: list[Path | str],
    tokenizer: Any,
    settings: EncodeSettings,
    method: str,
    reading: list[Any] | None = None,
    extra: str = "",
) -> str:
    """The cache key of the encoded rows of ``paths``.

    Args:
        paths: The data files, or for a dataset read by name the fingerprint of its rows
            (``data/hub.py``: the resolved revision, cache files and ``load_dataset``'s
            fingerprint), as a string.
        tokenizer: The prepared tokenizer.
        settings: The encode settings.
        method: The method.
        reading: How each dataset's rows were read (format, columns), when not the default.
        extra: Vision rows: the digest of their images and the processor (``data/vision.py``).
    """
    parts = {
        "format": CACHE_FORMAT,
        "engine": __version__,
        "method": method,
        "files": [p if isinstance(p, str) else file_digest(p) for p in paths],
        "reading": reading or [],
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "settings": {**asdict(settings), "template": settings.template.value},
    }
    if extra:
        parts["images"] = extra
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


MANIFEST = "manifest.json"
#: Files up to this size are checksummed whole; larger ones by their size and first/last MiB
#: (a full hash of a multi-gigabyte cache would cost more than the cache saves).
FULL_CHECKSUM_BYTES = 64 << 20


def _checksum(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_CHECKSUM_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(1 << 20))
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    entries = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        size = path.stat().st_size
        entries[path.relative_to(folder).as_posix()] = {
            "size": size,
            "sha256": _checksum(path, size),
        }
    return entries


def cache_problem(folder: Path) -> str | None:
    """Why a cache entry cannot be trusted (None when every file has its recorded size and sum)."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST} (written by an older version, or interrupted)"
    except (OSError, ValueError) as exc:
        return f"{MANIFEST} is unreadable ({exc})"
    for name, entry in recorded.items():
        path = folder / name
        try:
            size = path.stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != entry.get("size"):
            return f"{name} has {size} bytes, {entry.get('size')} were written (truncated)"
        if _checksum(path, size) != entry.get("sha256"):
            return f"{name} does not match its checksum (corrupt)"
    return None


def _save_atomically(store: Any, folder: Path) -> None:
    """Write a cache entry to a temporary folder and rename it: it is complete or absent.

    A cache that cannot be written (unwritable folder, full disk) is not an error: the run goes
    on without caching, and says so.
    """
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
        store.save(tmp)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp)))
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        no_space = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        logger.warning(
            "cannot write the data cache in %s (%s): going on without caching (set "
            "FINETUNING_CACHE_DIR to a writable folder with free space to cache the encoded data)",
            folder.parent,
            "no space left on the device" if no_space else exc.strerror or exc,
        )
        return
    except BaseException:  # interrupted (SIGTERM/Ctrl-C): leave nothing half-written behind
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(folder)  # atomic: a cache folder is complete or absent
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race


def _load(store_cls: Any, folder: Path) -> Any:
    """The cached store in ``folder``, or None (a damaged entry is removed, to be rebuilt)."""
    problem = cache_problem(folder)
    if problem is None:
        try:
            return store_cls.load(folder)
        except (OSError, ValueError, EOFError) as exc:
            problem = f"cannot be loaded ({exc})"
    logger.warning("the data cache entry %s is damaged: %s; rebuilding it", folder, problem)
    shutil.rmtree(folder, ignore_errors=True)
    return None


def prepare_data(
    data: ChatTrainValidConfig,
    tokenizer: Any,
    settings: EncodeSettings,
    method: str = "sft",
    num_workers: int | None = None,
    use_cache: bool = True,
    processor: Any = None,
) -> PreparedData:
    """Read, mix, encode and split the data of a config.

    Args:
        data: ``data_conf``.
        tokenizer: The prepared tokenizer (template tokens and pad token set).
        settings: Template and length settings.
        method: The method (``config.methods.METHODS``), which decides the row shape.
        num_workers: Preprocessing processes (default: up to 4, bounded by the CPU count).
        use_cache: Read and write the on-disk cache.
        processor: A vision-language model's processor (image rows are encoded with it).

    Raises:
        UserError: Missing or malformed files, bad mix weights or split ratio.
    """
    started = time.perf_counter()
    train_conf, valid_conf = data.training_data, data.validation_data
    infos: list[SourceInfo] = []
    all_rows: list[dict[str, Any]] = []
    lengths: list[int] = []
    paths: list[Path | str] = []
    reading: list[Any] = []
    groups = [("training_data", train_conf.datasets)]
    if valid_conf.type == "CONCATENATION":
        groups.append(("validation_data", valid_conf.datasets))
    for group, datasets in groups:
        for i, ds in enumerate(datasets):
            key = f"data_conf.{group}.datasets[{i}].path"
            read = read_dataset(ds, method, key)
            rows = read.rows
            infos.append(SourceInfo(key, ds.path, len(rows), read.format, read.detected))
            all_rows += rows
            lengths.append(len(rows))
            paths.append(read.fingerprint or Path(ds.path))
            reading.append([read.format, dict(getattr(ds, "columns", None) or {})])

    workers = num_workers or min(4, os.cpu_count() or 1)
    store, hit, folder = None, False, None
    store_cls, encode = {
        "chat": (TokenStore, encode_chunk),
        "preference": (PreferenceStore, encode_preference_chunk),
        "prompt": (TokenStore, encode_prompt_chunk),
        "unpaired": (UnpairedStore, encode_unpaired_chunk),
        "text": (TokenStore, encode_text_chunk),
    }[rows_of(method)]
    encoder, extra = tokenizer, ""
    if vision := encoder_for(all_rows, method, settings, processor):
        store_cls, encode, encoder, extra = vision
    if use_cache:
        folder = cache_root() / cache_key(paths, tokenizer, settings, method, reading, extra)
        store = _load(store_cls, folder) if folder.exists() else None
        hit = store is not None
    if store is None:
        store = encode_rows(all_rows, encoder, settings, num_workers=workers, encode=encode)
        if folder is not None:
            _save_atomically(store, folder)
    logger.info(
        "data: %d rows %s",
        len(store),
        f"loaded from the cache {folder}" if hit else f"encoded (cache: {folder})",
    )

    n_train_sources = len(train_conf.datasets)
    train_lengths = lengths[:n_train_sources]
    status = np.asarray(store.status)
    usable = (status == OK) | (status == TRUNCATED)
    # Mixing, splitting and the per-source numbers count rows; a conversation trained turn by
    # turn gives several examples (data.history), which go where their row goes.
    expand = store.examples_of if isinstance(store, TokenStore) else (lambda rows: rows)
    by_rows = isinstance(store, TokenStore)
    n_rows = store.rows() if by_rows else len(store)
    row_of = np.asarray(store.source_rows, np.int64) if by_rows else np.arange(n_rows)
    row_usable = np.zeros(n_rows, bool)
    np.logical_or.at(row_usable, row_of, usable)
    row_tokens = np.bincount(  # the trained tokens of each row, over its usable examples
        row_of, weights=np.where(usable, store.lengths(), 0), minlength=n_rows
    ).astype(np.int64)
    if train_conf.type == "PRECOMPUTE_WEIGHTED_MIX":
        weights = [d.sampling_weight for d in train_conf.datasets]
        draw = weights
        if train_conf.weight_by == "tokens":
            draw = sources.token_draw(weights, train_lengths, row_tokens, row_usable)
        train_idx = sources.weighted_mix(train_lengths, draw, train_conf.seed)
    else:
        train_idx = sources.concatenate(train_lengths)
    mixed = len(train_idx)
    mixed_idx = expand(train_idx)
    train_idx = train_idx[row_usable[train_idx]]
    identical = int((status == IDENTICAL).sum())
    if rows_of(method) == "unpaired":
        identical //= 2  # both examples of an identical pair are marked: count rows
    if not len(train_idx) and len(mixed_idx) and (status[mixed_idx] == IDENTICAL).all():
        raise UserError(
            f"every preference row has identical chosen and rejected completions ({identical} "
            f"rows, compared after tokenisation): {method} learns nothing from them. Check that "
            "chosen_messages and rejected_messages hold different answers"
        )
    if not len(train_idx):
        raise UserError(
            f"no training rows are left after length handling ({int((status == TOO_LONG).sum())} "
            f"longer than {settings.max_length} tokens dropped, "
            f"{int((status == NOTHING_TRAINED).sum())} with no trained token): raise "
            + (
                "grpo_args.max_prompt_length"
                if rows_of(method) == "prompt"
                else "sft_args.max_seq_length or use length_handling: truncate"
            )
        )
    valid_idx = None
    if valid_conf.type == "AUTO_SPLIT":
        keep, held = sources.auto_split(len(train_idx), valid_conf.ratio, valid_conf.seed)
        train_idx, valid_idx = train_idx[keep], train_idx[held]
    elif valid_conf.type == "CONCATENATION":
        start = sum(train_lengths)
        valid_idx = np.arange(start, start + sum(lengths[n_train_sources:]), dtype=np.int64)
    train_rows = train_idx
    train_idx = expand(train_idx)
    train_idx = train_idx[usable[train_idx]]
    if valid_idx is not None:
        valid_idx = expand(valid_idx)
        valid_idx = valid_idx[usable[valid_idx]]
    mixture, parts = [], {}
    train_labels = source_labels(train_conf.datasets)
    if train_conf.type == "PRECOMPUTE_WEIGHTED_MIX":
        mixture = sources.mixture_table(
            train_labels, weights, train_conf.weight_by, train_lengths, row_tokens, train_rows
        )
    if valid_idx is not None and valid_conf.type == "CONCATENATION":
        labels = source_labels(valid_conf.datasets)
        first, valid_lengths = sum(train_lengths), lengths[n_train_sources:]
        parts = sources.by_source(valid_idx, valid_lengths, labels, first, row_of[valid_idx])
    elif valid_idx is not None:
        parts = sources.by_source(valid_idx, train_lengths, train_labels, 0, row_of[valid_idx])
    parts = {k: v for k, v in parts.items() if len(v)} if len(parts) > 1 else {}
    train, valid = EncodedSplit(store, train_idx), None
    if valid_idx is not None:
        valid = EncodedSplit(store, valid_idx)
    valid_parts = {k: EncodedSplit(store, v) for k, v in parts.items()}
    chunks = {}
    if settings.length_handling == "chunk" and isinstance(store, TokenStore):
        # Cut after mixing and splitting, so one document's chunks stay on one side.
        pieces = chunk_split(store, train_idx, settings.max_length)
        train = EncodedSplit(pieces.store, pieces.indices)
        chunks = {"split_documents": pieces.split_examples, "chunks": pieces.chunks_of_split}
        if valid_idx is not None:
            held = chunk_split(store, valid_idx, settings.max_length)
            valid = EncodedSplit(held.store, held.indices)
            for k, v in parts.items():
                part = chunk_split(store, v, settings.max_length)
                valid_parts[k] = EncodedSplit(part.store, part.indices)
    counts = {
        **chunks,
        "too_long_dropped": int((status == TOO_LONG).sum()),
        "truncated": int((status == TRUNCATED).sum()),
        "nothing_trained": int((status == NOTHING_TRAINED).sum()),
        "identical_dropped": identical,
    }
    return PreparedData(
        train=train,
        valid=valid,
        sources=infos,
        rows=all_rows,
        mixed_rows=mixed,
        status_counts=counts,
        cache_hit=hit,
        cache_path=folder,
        seconds=time.perf_counter() - started,
        valid_parts=valid_parts,
        mixture=mixture,
    )
