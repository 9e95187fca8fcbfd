"""Raw-text documents (continued pretraining) and splitting long examples into chunks.

A document ``{"text": "..."}`` is tokenised as it is, with no chat template: a BOS opens it when
the tokenizer adds one by itself (``add_special_tokens``, as Llama's does and Qwen's does not:
the model then sees documents as it saw them in pretraining), and the tokenizer's EOS always
closes it, so the model learns where a document ends and packed documents stay apart. Every
token is trained.

With ``length_handling: chunk`` a long example is kept whole in the encoded store (and its
cache); :func:`chunk_split` cuts the examples of a training or validation set into pieces of at
most ``max_length`` tokens afterwards, as new row boundaries over the same token arrays (no
copy). Mixing and splitting still work on whole documents, so the chunks of one document never
end up on both sides of a train/validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from finetuning.data.encode import OK, TOO_LONG, TRUNCATED, EncodeSettings, TokenStore
from finetuning.errors import UserError


def encode_text_chunk(
    rows: list[dict[str, Any]], tokenizer: Any, settings: EncodeSettings
) -> TokenStore:
    """Encode raw-text rows (``text``) into a :class:`TokenStore`, every token trained.

    Raises:
        UserError: The tokenizer has no EOS token (nothing would close a document).
    """
    from finetuning.data.encode import special_prefix

    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError(
            "the tokenizer has no EOS token, which closes every pretraining document: use a "
            "tokenizer that defines one (run_conf.tokenizer)"
        )
    prefix = np.asarray(special_prefix(tokenizer), dtype=np.int32)
    encoded = tokenizer([row["text"] for row in rows], add_special_tokens=False)["input_ids"]
    ids_out, status, full_lengths = [], [], []
    for ids in encoded:
        ids = np.concatenate([prefix, np.asarray(ids, dtype=np.int32), [eos]]).astype(np.int32)
        full_lengths.append(len(ids))
        code = OK
        if len(ids) > settings.max_length and settings.length_handling != "chunk":
            if settings.length_handling == "filter":
                ids, code = ids[:0], TOO_LONG
            else:
                ids, code = ids[: settings.max_length], TRUNCATED
        ids_out.append(ids)
        status.append(code)
    flat = np.concatenate(ids_out) if ids_out else np.zeros(0, np.int32)
    return TokenStore(
        flat,
        flat.copy(),
        np.concatenate([[0], np.cumsum([len(x) for x in ids_out])]).astype(np.int64),
        np.asarray(status, dtype=np.int8),
        np.asarray(full_lengths, dtype=np.int64),
    )


@dataclass(frozen=True)
class Chunked:
    """The chunks of a set of examples.

    Attributes:
        store: One row per chunk, over the token arrays of the original store.
        indices: The chunks of the set, in the order of its examples.
        split_examples: How many of the set's examples were longer than ``max_length``.
        chunks_of_split: How many chunks those examples became.
    """

    store: TokenStore
    indices: np.ndarray
    split_examples: int
    chunks_of_split: int


def chunk_store(store: TokenStore, max_length: int) -> tuple[TokenStore, np.ndarray]:
    """Every row of ``store`` cut into pieces of at most ``max_length`` tokens.

    Returns:
        The store of pieces (the same token arrays, new boundaries) and ``first``: row ``i``'s
        pieces are ``first[i]`` to ``first[i + 1]`` (exclusive).
    """
    lengths = store.lengths()
    pieces = -(-lengths // max_length)  # ceil; an empty row has none
    first = np.concatenate([[0], np.cumsum(pieces)]).astype(np.int64)
    row = np.repeat(np.arange(len(lengths)), pieces)
    k = np.arange(first[-1]) - first[row]
    starts = np.asarray(store.offsets)[row] + k * max_length
    offsets = np.concatenate([starts, [store.offsets[-1]]]).astype(np.int64)
    chunked = TokenStore(
        store.input_ids,
        store.labels,
        offsets,
        np.asarray(store.status)[row],
        np.diff(offsets),
    )
    return chunked, first


def chunk_split(store: TokenStore, indices: np.ndarray, max_length: int) -> Chunked:
    """The examples ``indices`` of ``store`` as chunks of at most ``max_length`` tokens."""
    pieces, first = chunk_store(store, max_length)
    indices = np.asarray(indices, dtype=np.int64)
    counts = first[indices + 1] - first[indices]
    total = int(counts.sum())
    starts = np.repeat(first[indices], counts)
    within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    split = counts > 1
    return Chunked(pieces, starts + within, int(split.sum()), int(counts[split].sum()))
