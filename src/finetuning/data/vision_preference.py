"""DPO on image rows: the prompt's images expanded as for SFT, completions checked as clean text.

The images live in ``prompt_messages`` (a completion is an assistant turn, and image tokens are
never trained). The prompt is rendered with the processor's template and its placeholders are
expanded by the same rule as SFT rows (:mod:`finetuning.data.vision`), checked against the
processor's own encoding; each completion is what the full conversation adds after the prompt,
checked to tokenise as a clean continuation, exactly as for text preference rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.config.data import ChatTemplateName
from finetuning.data.encode import (
    IDENTICAL,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    needs_special_prefix,
    special_prefix,
)
from finetuning.data.images import ROW_KEY
from finetuning.data.preference import PARTS, PreferenceStore, _store
from finetuning.data.templates import render
from finetuning.data.vision import (
    TOKEN_TYPE_KEYS,
    Expander,
    expand_images,
    image_placeholder,
    template_messages,
)
from finetuning.errors import UserError


@dataclass
class VisionPreferenceStore(PreferenceStore):
    """A :class:`PreferenceStore` with the prompt's token types and each row's image count."""

    prompt_types: np.ndarray = None  # aligned with prompt.input_ids (int8)
    images: np.ndarray = None

    def types(self, i: int) -> np.ndarray:
        return self.prompt_types[self.prompt.offsets[i] : self.prompt.offsets[i + 1]]

    def save(self, folder: Path) -> None:
        super().save(folder)
        np.save(folder / "prompt_types.npy", self.prompt_types)
        np.save(folder / "images.npy", self.images)

    @classmethod
    def load(cls, folder: Path) -> VisionPreferenceStore:
        base = PreferenceStore.load(folder)
        extra = [np.load(folder / f"{n}.npy") for n in ("prompt_types", "images")]
        return cls(*(getattr(base, f) for f in (*PARTS, "status", "full_lengths")), *extra)

    @staticmethod
    def concat(parts: list[VisionPreferenceStore]) -> VisionPreferenceStore:
        base = PreferenceStore.concat(parts)
        return VisionPreferenceStore(
            *(getattr(base, f) for f in (*PARTS, "status", "full_lengths")),
            np.concatenate([p.prompt_types for p in parts]),
            np.concatenate([p.images for p in parts]),
        )


def _ids(tokenizer: Any, text: str) -> np.ndarray:
    return np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)


def _completion(row, key, processor, prompt_text, expanded_prompt, n_prompt) -> np.ndarray:
    full = render(
        ChatTemplateName.KEEP_ORIGINAL,
        template_messages(row["prompt_messages"] + row[key]),
        processor,
        tools=row.get("tools"),
    )
    if not full.text.startswith(prompt_text):
        raise UserError(
            f"{row.get('_where', 'a row')}: the template renders the prompt differently once "
            f"`{key}` follows it"
        )
    end = full.spans[-1][1] if full.spans else len(full.text)
    ids = _ids(processor.tokenizer, expanded_prompt + full.text[len(prompt_text) : end])
    if len(ids) < n_prompt or not np.array_equal(
        ids[:n_prompt], _ids(processor.tokenizer, expanded_prompt)
    ):
        raise UserError(
            f"{row.get('_where', 'a row')}: prompt + `{key}` does not tokenise as a clean "
            "continuation of the prompt (tokens merge across the boundary)"
        )
    return ids[n_prompt:]


def encode_vision_preference_chunk(
    rows: list[dict[str, Any]], processor: Any, settings: EncodeSettings
) -> VisionPreferenceStore:
    """Encode DPO rows whose prompts may hold images. A row that does not fit is dropped
    (a prompt is never cut: a cut could go through an image); completions are cut to fit."""
    tokenizer = processor.tokenizer
    placeholder = image_placeholder(processor)
    expand = Expander(processor, placeholder)
    prefix = np.asarray(special_prefix(tokenizer), np.int64)
    seqs: dict[str, list[np.ndarray]] = {part: [] for part in PARTS}
    types_out, images_out, status, full_lengths = [], [], [], []
    for row in rows:
        where = row.get("_where", "a row")
        refs = row.get(ROW_KEY) or []
        for key in ("chosen_messages", "rejected_messages"):
            if any(isinstance(m.get("content"), list) and any(
                p["type"] == "image" for p in m["content"]) for m in row[key]):  # fmt: skip
                raise UserError(f"{where}: `{key}` has an image: images belong in the prompt")
        prompt = render(
            ChatTemplateName.KEEP_ORIGINAL,
            template_messages(row["prompt_messages"]),
            processor,
            add_generation_prompt=True,
            tools=row.get("tools"),
        )
        text = prompt.text
        if text.count(placeholder) != len(refs):
            raise UserError(
                f"{where}: the chat template wrote {text.count(placeholder)} image placeholders "
                f"for the prompt's {len(refs)} images"
            )
        images = [r.open() for r in refs]
        expanded, _, _ = expand_images(text, placeholder, [expand(im) for im in images], ())
        prompt_ids = _ids(tokenizer, expanded)
        types = np.zeros(len(prompt_ids), np.int8)
        if images:
            reference = processor(text=[text], images=[images], add_special_tokens=False)
            if list(reference["input_ids"][0]) != prompt_ids.tolist():
                raise UserError(f"{where}: the processor encodes this prompt differently")
            for key in TOKEN_TYPE_KEYS:
                if key in reference:
                    types = np.asarray(reference[key][0], np.int8)
        n = len(prompt_ids)
        chosen = _completion(row, "chosen_messages", processor, text, expanded, n)
        rejected = _completion(row, "rejected_messages", processor, text, expanded, n)
        if len(prefix) and needs_special_prefix(tokenizer, text):
            prompt_ids = np.concatenate([prefix, prompt_ids])
            types = np.concatenate([np.zeros(len(prefix), np.int8), types])
        longest = max(len(chosen), len(rejected))
        full_lengths.append(len(prompt_ids) + longest)
        code, room = OK, settings.max_length - len(prompt_ids)
        if len(prompt_ids) + longest > settings.max_length:
            if settings.truncation_mode == "drop" or room <= 0:
                code, prompt_ids, types = TOO_LONG, prompt_ids[:0], types[:0]
                chosen, rejected = chosen[:0], rejected[:0]
            else:
                code, chosen, rejected = TRUNCATED, chosen[:room], rejected[:room]
        if code != TOO_LONG and np.array_equal(chosen, rejected):
            code = IDENTICAL
        status.append(code)
        for part, seq in zip(PARTS, (prompt_ids, chosen, rejected), strict=True):
            seqs[part].append(seq)
        types_out.append(types)
        images_out.append(len(refs))
    return VisionPreferenceStore(
        _store(seqs["prompt"], labelled=False),
        _store(seqs["chosen"], labelled=True),
        _store(seqs["rejected"], labelled=True),
        np.asarray(status, np.int8),
        np.asarray(full_lengths, np.int64),
        np.concatenate(types_out).astype(np.int8) if types_out else np.zeros(0, np.int8),
        np.asarray(images_out, np.int64),
    )


@dataclass
class VisionPreferenceCollator:
    """TRL's preference batch (chosen rows, then rejected rows, right-padded) plus the prompt's
    token types and the images (each row's images twice: once per half)."""

    pad_id: int
    rows: list[dict[str, Any]]
    processor: Any
    types_key: str | None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        plain = [{k: e[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for e in examples]
        batch = DataCollatorForPreference(pad_token_id=self.pad_id)(plain)
        if self.types_key:
            types = torch.zeros_like(batch["input_ids"])
            for half in range(2):
                for i, e in enumerate(examples):
                    row_types = torch.as_tensor(e["prompt_types"], dtype=torch.long)
                    types[half * len(examples) + i, : len(row_types)] = row_types
            batch[self.types_key] = types
        opened = [[r.open() for r in self.rows[e["row"]].get(ROW_KEY) or []] for e in examples]
        images = [im for _ in range(2) for row in opened for im in row]
        if images:
            pixels = self.processor.image_processor(images, return_tensors="pt")
            batch.update({k: v for k, v in pixels.items() if k != "num_crops"})
        return batch


def vision_preference_dataset(split: Any) -> Any:
    """``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` with the prompt types and row index."""
    from datasets import Dataset

    store = split.store
    items = []
    for i in split.indices:
        item = store.triple(int(i))
        item["prompt_types"] = store.types(int(i)).tolist()
        item["row"] = int(i)
        items.append(item)
    return Dataset.from_list(items)
