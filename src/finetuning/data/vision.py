"""Encoding chat rows with images for a vision-language model, with exact text-only loss masks.

The conversation is rendered with the processor's own chat template (keep-original, through the
same :func:`finetuning.data.templates.render` as text rows, so the assistant spans come from the
same prefix rule). The template writes one placeholder per image (Gemma 3: ``<start_of_image>``);
the processor expands each into the image's token sequence. The engine writes that expansion into
the text itself (the processor's expansion of the placeholder alone, for the image's size), so it
knows the character span of every image, tokenises the expanded text once with offset mapping and
labels exactly the tokens inside assistant spans. The result is checked against the processor's
own encoding of the row (same ids), which also gives its per-token extras (``token_type_ids``).
Image tokens are never trained, whatever ``train_on_completions_only`` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.config.data import ChatTemplateName
from finetuning.data.encode import (
    IGNORE,
    NOTHING_TRAINED,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    needs_special_prefix,
    special_prefix,
    template_refused,
)
from finetuning.data.images import ROW_KEY
from finetuning.data.templates import TemplateMismatch, UnsupportedRow, render
from finetuning.errors import UserError

#: The per-token extras processors return beside ``input_ids`` (kept aligned with them).
TOKEN_TYPE_KEYS = ("token_type_ids", "mm_token_type_ids")
ARRAYS = (
    "input_ids",
    "labels",
    "offsets",
    "status",
    "full_lengths",
    "token_types",
    "vision",
    "images",
    "image_tokens",
)


@dataclass
class VisionStore:
    """Encoded image rows as flat arrays, like :class:`finetuning.data.encode.TokenStore`.

    Attributes:
        input_ids, labels, offsets, status, full_lengths: As in ``TokenStore``.
        token_types: The processor's per-token type ids (1 on image tokens for Gemma 3), int8.
        vision: Per token, the 1-based number of the image whose expansion it belongs to (0 for
            text), int16: never trained, shown as one marker by ``validate --show-example``.
        images: Images per row.
        image_tokens: Image tokens per row (the expanded placeholders).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    status: np.ndarray
    full_lengths: np.ndarray
    token_types: np.ndarray
    vision: np.ndarray
    images: np.ndarray
    image_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.input_ids[start:end], self.labels[start:end]

    def types(self, i: int) -> np.ndarray:
        return self.token_types[self.offsets[i] : self.offsets[i + 1]]

    def image_of(self, i: int) -> np.ndarray:
        return self.vision[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, folder: Path) -> None:
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> VisionStore:
        return cls(*(np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS))

    @staticmethod
    def concat(parts: list[VisionStore]) -> VisionStore:
        shifts = np.cumsum([0] + [len(p.input_ids) for p in parts[:-1]])
        joined = {n: np.concatenate([getattr(p, n) for p in parts]) for n in ARRAYS}
        joined["offsets"] = np.concatenate(
            [[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
        ).astype(np.int64)
        return VisionStore(**joined)


def image_placeholder(processor: Any) -> str:
    """The text the chat template writes per image and the processor expands."""
    token = getattr(processor, "image_token", None)
    if not isinstance(token, str):
        raise UserError(
            f"run_conf.model: the processor {type(processor).__name__} names no image token, so "
            "the images of a row cannot be placed in its text"
        )
    return token


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the template sees them: image parts as ``{"type": "image"}``.

    The images themselves go to the processor; the template only writes their placeholders.
    """
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = [{"type": "image"} if p["type"] == "image" else p for p in content]
            m = {**m, "content": parts}
        out.append(m)
    return out


def _check_assistant_images(row: dict[str, Any]) -> None:
    for i, m in enumerate(row["messages"]):
        content = m.get("content")
        parts = content if m["role"] == "assistant" and isinstance(content, list) else []
        if any(p["type"] == "image" for p in parts):
            raise UserError(
                f"{row.get('_where', 'a row')}: messages[{i}] is an assistant turn with an "
                "image: images are inputs (image tokens are never trained), put them in a "
                "user turn"
            )


class Expander:
    """The text each image's placeholder expands to, asked of the processor once per image size."""

    def __init__(self, processor: Any, placeholder: str):
        self.processor, self.placeholder = processor, placeholder
        self.cache: dict[tuple[int, int], str] = {}

    def __call__(self, image: Any) -> str:
        if image.size not in self.cache:
            ids = self.processor(
                text=[self.placeholder], images=[[image]], add_special_tokens=False
            )["input_ids"][0]
            self.cache[image.size] = self.processor.tokenizer.decode(
                ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
        return self.cache[image.size]


def expand_images(
    text: str, placeholder: str, expansions: list[str], spans: tuple
) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """(expanded text, assistant spans in it, image spans in it)."""
    pieces, images, shifted = [], [], []
    pos, out_len, cuts = 0, 0, []
    for expansion in expansions:
        at = text.index(placeholder, pos)
        pieces.append(text[pos:at])
        out_len += at - pos
        images.append((out_len, out_len + len(expansion)))
        cuts.append((at, len(expansion) - len(placeholder)))
        pieces.append(expansion)
        out_len += len(expansion)
        pos = at + len(placeholder)
    pieces.append(text[pos:])

    def move(p: int) -> int:
        return p + sum(delta for at, delta in cuts if at < p)

    shifted = [(move(s), move(e)) for s, e in spans]
    return "".join(pieces), shifted, images


def _inside(offs: np.ndarray, spans: list[tuple[int, int]] | tuple) -> np.ndarray:
    nonempty = offs[:, 1] > offs[:, 0]
    hit = np.zeros(len(offs), dtype=bool)
    for s, e in spans:
        hit |= nonempty & (offs[:, 0] < e) & (offs[:, 1] > s)
    return hit


def encode_vision_chunk(
    rows: list[dict[str, Any]], processor: Any, settings: EncodeSettings
) -> VisionStore:
    """Encode SFT rows (``messages``, some with images) for a vision-language model.

    Raises:
        UserError: An image in an assistant turn, a template that drops an image or refuses the
            row, or a processor whose encoding differs from the engine's expansion.
    """
    from jinja2 import TemplateError

    tokenizer = processor.tokenizer
    placeholder = image_placeholder(processor)
    expand = Expander(processor, placeholder)
    prefix = special_prefix(tokenizer)
    arrays: dict[str, list] = {n: [] for n in ARRAYS if n != "offsets"}
    for row in rows:
        where = row.get("_where", "a row")
        _check_assistant_images(row)
        refs = row.get(ROW_KEY) or []
        try:
            rendered = render(
                ChatTemplateName.KEEP_ORIGINAL,
                template_messages(row["messages"]),
                processor,
                tools=row.get("tools"),
            )
        except (TemplateMismatch, UnsupportedRow) as exc:
            raise UserError(f"{where}: {exc}") from None
        except TemplateError as exc:
            raise UserError(template_refused(row, exc)) from None
        text = rendered.text
        if text.count(placeholder) != len(refs):
            raise UserError(
                f"{where}: the chat template wrote {text.count(placeholder)} image placeholders "
                f"({placeholder!r}) for the row's {len(refs)} images: every image must appear "
                "in the rendered text (does the template render image parts in every role?)"
            )
        images = [r.open() for r in refs]
        full, spans, image_spans = expand_images(
            text, placeholder, [expand(im) for im in images], rendered.spans
        )
        encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(encoded["input_ids"], dtype=np.int32)
        offs = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        types = np.zeros(len(ids), dtype=np.int8)
        if images:
            reference = processor(text=[text], images=[images], add_special_tokens=False)
            if list(reference["input_ids"][0]) != ids.tolist():
                raise UserError(
                    f"{where}: the processor ({type(processor).__name__}) encodes this row "
                    "differently from the text the engine expanded its images into, so the "
                    "loss mask cannot be placed exactly; this model family is not supported yet"
                )
            for key in TOKEN_TYPE_KEYS:
                if key in reference:
                    types = np.asarray(reference[key][0], dtype=np.int8)
        trained = _inside(offs, spans) if settings.completions_only else np.ones(len(ids), bool)
        vision = np.zeros(len(ids), dtype=np.int16)
        for k, span in enumerate(image_spans):
            vision[_inside(offs, [span])] = k + 1
        trained &= vision == 0  # image tokens are never trained
        if prefix and needs_special_prefix(tokenizer, text):
            ids = np.concatenate([np.asarray(prefix, dtype=np.int32), ids])
            trained = np.concatenate([np.full(len(prefix), not settings.completions_only), trained])
            types = np.concatenate([np.zeros(len(prefix), np.int8), types])
            vision = np.concatenate([np.zeros(len(prefix), np.int16), vision])
        labels = np.where(trained, ids, IGNORE).astype(np.int32)
        code, keep = OK, len(ids)
        if len(ids) > settings.max_length:
            last_image = int(np.nonzero(vision)[0][-1]) + 1 if vision.any() else 0
            # A cut through an image would leave the model fewer image tokens than features.
            if settings.length_handling == "truncate" and last_image <= settings.max_length:
                code, keep = TRUNCATED, settings.max_length
            else:
                code, keep = TOO_LONG, 0
        if code != TOO_LONG and not (labels[:keep] != IGNORE).any():
            code = NOTHING_TRAINED
        arrays["input_ids"].append(ids[:keep])
        arrays["labels"].append(labels[:keep])
        arrays["token_types"].append(types[:keep])
        arrays["vision"].append(vision[:keep])
        arrays["status"].append(code)
        arrays["full_lengths"].append(len(ids))
        arrays["images"].append(len(refs))
        arrays["image_tokens"].append(int((vision[:keep] > 0).sum()))
    lengths = [len(x) for x in arrays["input_ids"]]
    return VisionStore(
        input_ids=_flat(arrays["input_ids"], np.int32),
        labels=_flat(arrays["labels"], np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        status=np.asarray(arrays["status"], dtype=np.int8),
        full_lengths=np.asarray(arrays["full_lengths"], dtype=np.int64),
        token_types=_flat(arrays["token_types"], np.int8),
        vision=_flat(arrays["vision"], np.int16),
        images=np.asarray(arrays["images"], dtype=np.int64),
        image_tokens=np.asarray(arrays["image_tokens"], dtype=np.int64),
    )


def _flat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def cache_extra(rows: list[dict[str, Any]], processor: Any) -> str:
    """What the data cache key adds for image rows: every image's bytes and the processor."""
    import hashlib

    h = hashlib.sha256()
    for row in rows:
        for ref in row.get(ROW_KEY) or []:
            h.update(ref.digest.encode())
        h.update(b"\0")
    h.update(processor.image_processor.to_json_string().encode())
    h.update(str(getattr(processor, "chat_template", "")).encode())
    return h.hexdigest()


#: The templates that render image parts (the processor's own; named templates write text only).
IMAGE_TEMPLATES = (ChatTemplateName.KEEP_ORIGINAL,)


def encoder_for(
    rows: list[dict[str, Any]], method: str, settings: EncodeSettings, processor: Any
) -> tuple[Any, Any, Any, str] | None:
    """The (store class, encode function, its tokenizer argument, cache-key extra) for image
    rows, or None when the text encoders serve (no vision-language processor, or no image row
    with a named template).

    Raises:
        UserError: Image rows for a text-only model, with a named template, or for a method
            that does not take them.
    """
    from finetuning.config.methods import rows_of
    from finetuning.data.images import has_images

    with_images = [r for r in rows if has_images(r)]
    first = with_images[0]["_where"] if with_images else ""
    if processor is None:
        if with_images:
            raise UserError(
                f"{first}: this row has images, but run_conf.model is a text-only model (its "
                "config has no vision_config): use a vision-language model (see docs/vision.md) "
                "or rows without image parts"
            )
        return None
    if settings.template not in IMAGE_TEMPLATES:
        if with_images:
            allowed = ", ".join(t.value for t in IMAGE_TEMPLATES)
            raise UserError(
                f"data_conf.chat_template_name: {settings.template.value} cannot render images "
                f"and {first} has them: use a template that can ({allowed}: the processor's "
                "own chat template)"
            )
        return None
    if method == "dpo":  # the prompt's images, as for SFT; completions are text
        from finetuning.data.vision_preference import (
            VisionPreferenceStore,
            encode_vision_preference_chunk,
        )

        extra = cache_extra(rows, processor)
        return VisionPreferenceStore, encode_vision_preference_chunk, processor, extra
    if rows_of(method) != "chat":
        if with_images:
            raise UserError(
                f"{first}: image rows are supported for sft and dpo, not yet for {method} (see "
                "docs/vision.md)"
            )
        return None
    return VisionStore, encode_vision_chunk, processor, cache_extra(rows, processor)
