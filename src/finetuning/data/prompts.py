"""GRPO prompt rows: the prompt messages rendered with our template plus the generation prompt.

The prompt is rendered and tokenised exactly as the DPO prompt is (``data/preference.py``): our
template writes the text, the tokenizer's special prefix (BOS) is added only when the template
did not write it. The ids are what the policy generates from; TRL never applies a chat template
of its own to them. A prompt longer than ``max_length`` (``grpo_args.max_prompt_length``) is
left out (status TOO_LONG, stored empty) and counted in the data report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finetuning.data.encode import (
    IGNORE,
    OK,
    TOO_LONG,
    EncodeSettings,
    TokenStore,
    encode_each,
    special_prefix,
)
from finetuning.data.preference import rendered_prompt

#: Row keys TRL's GRPOTrainer reserves for its own columns (``_calculate_rewards`` in TRL 1.16
#: passes every key of a row to the reward functions except these): a row's own ``prompt``,
#: ``completion`` or ``completion_ids`` never reaches a reward function.
RESERVED_KEYS = ("prompt", "completion", "completion_ids")


def reward_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``row`` a reward function (or an eval's metric) receives as columns.

    Every key but the engine's own (``_where``, ...) and :data:`RESERVED_KEYS`, TRL's rule; the
    one place that rule is written (GRPO's items, the eval metrics and the preflight use it).
    """
    return {k: v for k, v in row.items() if not k.startswith("_") and k not in RESERVED_KEYS}


def prompt_ids(row: dict[str, Any], tokenizer: Any, settings: EncodeSettings) -> list[int]:
    """The token ids of a row's prompt: rendered messages, generation prompt, BOS if needed."""
    _, ids = rendered_prompt(row, tokenizer, settings, special_prefix(tokenizer))
    return ids.tolist()


def encode_prompt_chunk(
    rows: list[dict[str, Any]], tokenizer: Any, settings: EncodeSettings
) -> TokenStore:
    """Encode GRPO rows into a :class:`TokenStore` of prompt ids (labels unused: -100)."""
    seqs: list[np.ndarray] = []
    status, full_lengths = [], []
    encoded = encode_each(rows, lambda row: prompt_ids(row, tokenizer, settings), "prompt")
    for ids in encoded:
        ids = np.asarray(ids, np.int32)
        full_lengths.append(len(ids))
        code = OK
        if len(ids) > settings.max_length:
            ids, code = ids[:0], TOO_LONG
        seqs.append(ids)
        status.append(code)
    lengths = [len(s) for s in seqs]
    ids_all = np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32)
    return TokenStore(
        ids_all,
        np.full(len(ids_all), IGNORE, np.int32),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.asarray(status, np.int8),
        np.asarray(full_lengths, np.int64),
    )
