"""What the preflight and ``validate --show-example`` say about image rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from finetuning.data.encode import IGNORE, TOO_LONG
from finetuning.data.images import ROW_KEY


def resized_size(processor: Any, image: Any) -> tuple[int, int]:
    """(width, height) of an image after the processor's resizing (what the vision tower sees)."""
    out = processor.image_processor([image], return_tensors="np")
    if "image_sizes" in out:  # families that keep the aspect ratio say so
        height, width = (int(v) for v in np.asarray(out["image_sizes"])[0][:2])
        return width, height
    if "image_grid_thw" in out:  # patch grids (Qwen2-VL style): grid x patch size
        _, h, w = (int(v) for v in np.asarray(out["image_grid_thw"])[0])
        patch = int(getattr(processor.image_processor, "patch_size", 1) or 1)
        return w * patch, h * patch
    shape = np.asarray(out["pixel_values"]).shape
    return int(shape[-1]), int(shape[-2])


def vision_lines(config: Any, data: Any, report: Any) -> None:
    """Images per row, image-token share, the largest image after resizing, rows dropped."""
    store = data.train.store
    processor = report.setup.processor
    if processor is None or not hasattr(store, "images"):  # SFT and DPO image stores
        return
    lines = report.lines
    images = np.asarray(store.images)
    train = data.train.indices
    per_row = images[train] if len(train) else np.zeros(0, np.int64)
    with_images = int((per_row > 0).sum())
    if len(per_row):
        lines.append(
            f"images: {int(per_row.sum())} in {with_images} of {len(per_row)} training rows "
            f"(per row: min {int(per_row.min())}, median {int(np.median(per_row))}, max "
            f"{int(per_row.max())})"
        )
    if hasattr(store, "image_tokens"):
        tokens = int(np.asarray(store.image_tokens)[train].sum())
        total = int(data.train.lengths().sum())
        share = tokens / total if total else 0.0
        lines.append(f"image tokens: {tokens} of {total} tokens ({share:.1%}), never trained")
    refs = [ref for row in data.rows for ref in row.get(ROW_KEY) or []]
    if refs:
        largest = max(refs, key=lambda r: r.width * r.height)
        width, height = resized_size(processor, largest.open())
        lines.append(
            f"largest image: {largest.shown} ({largest.where} of {rows_with(data.rows, largest)}),"
            f" {largest.width}x{largest.height}, resized to {width}x{height} by "
            f"{type(processor.image_processor).__name__} (run_conf.processor_args sets the size)"
        )
    status = np.asarray(store.status)
    dropped = status == TOO_LONG
    if dropped.any():
        lines.append(
            f"rows dropped for length: {int(dropped.sum())}, {int((images[dropped] > 0).sum())} "
            f"of them with images ({int(images[dropped].sum())} images)"
        )
    lines.append(
        "batching: padded (image rows are not packed: each row's image tokens and position "
        "ids stay as the processor made them)"
    )


def rows_with(rows: list[dict[str, Any]], ref: Any) -> str:
    for row in rows:
        if any(r is ref for r in row.get(ROW_KEY) or []):
            return row.get("_where", "a row")
    return "a row"


def marked_example(store: Any, index: int, rows: list[dict[str, Any]], setup: Any) -> str:
    """One encoded row decoded, trained tokens between ⟦ ⟧, each image as one marker.

    The marker reads ``⟨image 1: 448x448, 64 tokens⟩``: the size after resizing and the number
    of tokens the image's expansion takes; it is never inside a trained span.
    """
    tokenizer, processor = setup.tokenizer, setup.processor
    ids, labels = store.row(index)
    owner = store.image_of(index)
    refs = rows[index].get(ROW_KEY) or []
    pieces, trained_run, shown = [], False, set()
    for token, label, image in zip(ids.tolist(), labels.tolist(), owner.tolist(), strict=True):
        trained = label != IGNORE
        if trained != trained_run:
            pieces.append("⟦" if trained else "⟧")
            trained_run = trained
        if image:
            if image not in shown:
                shown.add(image)
                count = int((owner == image).sum())
                width, height = resized_size(processor, refs[image - 1].open())
                pieces.append(f"⟨image {image}: {width}x{height}, {count} tokens⟩")
            continue
        pieces.append(tokenizer.decode([token]))
    return "".join(pieces) + ("⟧" if trained_run else "")
