"""The dataset and collator of image rows: padded batches with the processor's image tensors.

Images are opened and processed when a row is fetched (in the data loader's workers, when there
are any), never cached: the cache holds the token ids, labels and token types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finetuning.data.encode import IGNORE
from finetuning.data.images import ROW_KEY

#: Image-processor outputs that are not model inputs.
NOT_INPUTS = ("num_crops",)


def token_type_key(processor: Any) -> str | None:
    """The name under which the processor returns per-token types (None if it returns none)."""
    out = processor(text=["a"], add_special_tokens=False)
    return next((k for k in ("token_type_ids", "mm_token_type_ids") if k in out), None)


class VisionDataset:
    """``{"input_ids", "labels", token types, image tensors}`` for each row of a split."""

    def __init__(self, split: Any, rows: list[dict[str, Any]], processor: Any, types_key: Any):
        self.split, self.rows, self.processor, self.types_key = split, rows, processor, types_key

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = int(self.split.indices[i])
        store = self.split.store
        ids, labels = store.row(index)
        item: dict[str, Any] = {"input_ids": ids, "labels": labels}
        if self.types_key:
            item[self.types_key] = store.types(index)
        refs = self.rows[index].get(ROW_KEY) or []
        if refs:
            pixels = self.processor.image_processor([r.open() for r in refs], return_tensors="pt")
            item.update({k: v for k, v in pixels.items() if k not in NOT_INPUTS})
        return item


@dataclass
class VisionCollator:
    """Pad a micro-batch on ``side``; per-token keys are padded, image tensors concatenated.

    Attributes:
        pad_id: The pad token id.
        side: "right" or "left".
        token_keys: Keys padded like ``input_ids`` (the token types), with 0.
    """

    pad_id: int
    side: str = "right"
    token_keys: tuple[str, ...] = field(default_factory=tuple)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        n = len(examples)
        arrays = {
            "input_ids": np.full((n, longest), self.pad_id, dtype=np.int64),
            "labels": np.full((n, longest), IGNORE, dtype=np.int64),
            "attention_mask": np.zeros((n, longest), dtype=np.int64),
            **{k: np.zeros((n, longest), dtype=np.int64) for k in self.token_keys},
        }
        for row, e in enumerate(examples):
            length = len(e["input_ids"])
            cols = slice(0, length) if self.side == "right" else slice(longest - length, longest)
            arrays["input_ids"][row, cols] = e["input_ids"]
            arrays["labels"][row, cols] = e["labels"]
            arrays["attention_mask"][row, cols] = 1
            for k in self.token_keys:
                arrays[k][row, cols] = e[k]
        batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
        per_image = {k for e in examples for k in e if k not in batch}
        for key in sorted(per_image):  # the images of the batch, in row order
            batch[key] = torch.cat([e[key] for e in examples if key in e])
        return batch
