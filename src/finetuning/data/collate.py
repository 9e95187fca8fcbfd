"""Datasets over encoded rows and the collators that batch them (padding-free or padded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from finetuning.data.encode import IGNORE
from finetuning.data.prepare import EncodedSplit


class SFTDataset:
    """A map-style dataset of ``{"input_ids", "labels"}`` over an :class:`EncodedSplit`."""

    def __init__(self, split: EncodedSplit):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ids, labels = self.split.store.row(int(self.split.indices[i]))
        return {"input_ids": ids, "labels": labels}


@dataclass
class PaddingFreeCollator:
    """Concatenate the examples of a micro-batch into one row, position ids restarting per example.

    No pad token is computed. The examples' boundaries go with the batch as
    ``cu_seq_lens_q/k`` and ``max_length_q/k`` (the names of transformers' flash-attention kwargs,
    which models pass through to the attention function): the per-example attention of
    :mod:`finetuning.model.attention` and flash-attention use them, so attention never crosses
    examples and no ``S x S`` mask is built. Other implementations (eager, plain sdpa) ignore
    them and build a block-diagonal mask from the position id resets instead. The first label of each example is masked, because in the packed row it would be predicted
    from the previous example's last token; in a padded batch that label is never used either,
    so the loss equals the padded batch's loss.

    Attributes:
        keep_trained_logits: Also pass ``logits_to_keep`` (see :func:`trained_positions`), so the
            model computes the LM head only where a label is trained. Only for models that
            honour a boolean ``logits_to_keep`` (``finetuning.train.loss.keeps_trained_logits``)
            and with a loss that expects the kept logits (``chunked_causal_lm_loss``).
    """

    keep_trained_logits: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = np.concatenate([np.asarray(e["input_ids"]) for e in examples])
        labels = [np.asarray(e["labels"]).copy() for e in examples]
        for lab in labels:
            lab[0] = IGNORE
        lengths = [len(e["input_ids"]) for e in examples]
        positions = np.concatenate([np.arange(n) for n in lengths])
        row_labels = np.concatenate(labels).astype(np.int64)[None]
        batch = {
            "input_ids": torch.from_numpy(ids.astype(np.int64))[None],
            "labels": torch.from_numpy(row_labels),
            "position_ids": torch.from_numpy(positions.astype(np.int64))[None],
            **boundaries(lengths),
        }
        if self.keep_trained_logits:
            batch["logits_to_keep"] = trained_positions(row_labels)
        return batch


def trained_positions(labels: np.ndarray) -> Any:
    """``logits_to_keep`` for ``[batch, length]`` labels: True where the next token is trained.

    The logits at position ``i`` predict label ``i + 1``; positions whose next label is ignored
    (prompts, padding, the last position) need no logits. transformers' models take a boolean
    ``[batch, length]`` ``logits_to_keep`` and return the kept positions' logits flattened to
    ``[kept, vocab]`` in row-major order, the order of ``labels[:, 1:][mask[:, :-1]]``.
    """
    import torch

    keep = np.zeros(labels.shape, dtype=bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return torch.from_numpy(keep)


def boundaries(lengths: list[int]) -> dict[str, Any]:
    """The flash-attention kwargs of a packed row: cumulative lengths (int32) and the longest."""
    import torch

    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    longest = max(lengths)
    return {
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": longest,
        "max_length_k": longest,
    }


@dataclass
class PaddedCollator:
    """Pad a micro-batch to its longest example on the configured side; padding labels are -100.

    Attributes:
        pad_id: The pad token id.
        side: "right" or "left".
        eos_id: With ``unk-convert-to-eos``, the input-side padding becomes this id (its labels
            stay -100); None otherwise.
        keep_trained_logits: As in :class:`PaddingFreeCollator`.
    """

    pad_id: int
    side: str = "right"
    eos_id: int | None = None
    keep_trained_logits: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        n = len(examples)
        fill = self.eos_id if self.eos_id is not None else self.pad_id
        ids = np.full((n, longest), fill, dtype=np.int64)
        labels = np.full((n, longest), IGNORE, dtype=np.int64)
        mask = np.zeros((n, longest), dtype=np.int64)
        for row, e in enumerate(examples):
            length = len(e["input_ids"])
            cols = slice(0, length) if self.side == "right" else slice(longest - length, longest)
            ids[row, cols] = e["input_ids"]
            labels[row, cols] = e["labels"]
            mask[row, cols] = 1
        batch = {
            "input_ids": torch.from_numpy(ids),
            "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(mask),
        }
        if self.keep_trained_logits:
            batch["logits_to_keep"] = trained_positions(labels)
        return batch
