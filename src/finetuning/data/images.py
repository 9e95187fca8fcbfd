"""Images in chat rows: content parts, where each image comes from, and the checks before training.

A message's ``content`` may be a list of parts (the Hugging Face / OpenAI convention):
``{"type": "text", "text": ...}`` and ``{"type": "image", "image": SOURCE}``. A source is a path
(relative to the data file, absolute, or ``file://``), a base64 ``data:`` URI, or the ``datasets``
Image feature ``{"bytes": ..., "path": ...}`` (Parquet / ``save_to_disk`` data). TRL's convention
also loads: an ``images`` column (a list of sources) with ``{"type": "image"}`` placeholders in the
messages, taken in order.

Every image is opened with Pillow while the rows are read (before any model loads): it must exist,
decode, and the placeholders must match the ``images`` column in number. Pillow is imported only
when a row has an image (``pip install 'finetuning[vision]'``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetuning.errors import UserError

MESSAGE_KEYS = (
    "messages",
    "prompt_messages",
    "chosen_messages",
    "rejected_messages",
    "completion_messages",  # KTO
)
PART_TYPES = ("text", "image")
#: Where the resolved images of a row are kept (a list of :class:`ImageRef`, in order).
ROW_KEY = "_images"


@dataclass(frozen=True)
class ImageRef:
    """One checked image of a row.

    Attributes:
        where: The part it came from, e.g. ``messages[0].content[1]``.
        shown: The source as the row gave it (a path, or ``base64 data`` / ``bytes``).
        path: The file to read, or None when the bytes are in the row.
        data: The image bytes, when the row holds them.
        width: Width in pixels.
        height: Height in pixels.
        digest: sha256 of the image bytes (part of the data cache key).
    """

    where: str
    shown: str
    path: str | None
    data: bytes | None
    width: int
    height: int
    digest: str

    def open(self) -> Any:
        """The image as an RGB ``PIL.Image``."""
        image = pillow().open(io.BytesIO(self.data) if self.data is not None else self.path)
        return image.convert("RGB")


def pillow() -> Any:
    """``PIL.Image``, or a user error naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError(
            "rows with images need Pillow: pip install 'finetuning[vision]' (or pip install pillow)"
        ) from None
    return Image


def check_parts(content: list[Any], where: str) -> str:
    """An empty string for a good list of content parts, else what is wrong (no file access)."""
    if not content:
        return f"{where}.content is an empty list of parts"
    for i, part in enumerate(content):
        at = f"{where}.content[{i}]"
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            return (
                f'{where}.content must be a string or a list of parts ({{"type": "text", '
                f'"text": ...}}, {{"type": "image", "image": PATH}}); content[{i}] is '
                f"{str(part)[:60]}"
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            return f"{at}.text must be a string"
    return ""


def image_parts(record: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, part) for every image part of a row's messages, in order."""
    found = []
    for key in MESSAGE_KEYS:
        for i, message in enumerate(record.get(key) or []):
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and part.get("type") == "image":
                        found.append((f"{key}[{i}].content[{j}]", part))
    return found


def has_images(row: dict[str, Any]) -> bool:
    return bool(row.get(ROW_KEY))


def text_of(content: Any) -> str:
    """A message's text: the string, or its text parts joined (images left out)."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content if p.get("type") == "text")
    return content


def _source(value: Any, base: Path) -> tuple[str, str | None, bytes | None]:
    """(shown, path, bytes) of an image source; ValueError says what is wrong with it."""
    if isinstance(value, dict):  # the datasets Image feature
        if value.get("bytes") is not None:
            return str(value.get("path") or "bytes"), None, bytes(value["bytes"])
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise ValueError(
            "needs an image: a path, a file:// URL, a base64 data URI or {bytes, path}"
        )
    if value.startswith("data:"):
        head, _, payload = value.partition(",")
        if ";base64" not in head:
            raise ValueError("is a data URI that is not base64 (data:image/png;base64,...)")
        try:
            return "base64 data", None, base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is a data URI whose base64 does not decode") from None
    if value.startswith(("http://", "https://")):
        raise ValueError(f"{value} is a URL: download the image and give its path")
    path = Path(value.removeprefix("file://"))
    return value, str(path if path.is_absolute() else base / path), None


def _checked(where: str, value: Any, base: Path) -> ImageRef:
    """The :class:`ImageRef` of one source; ValueError says what is wrong (for ``where``)."""
    shown, path, data = _source(value, base)
    if path is not None:
        try:
            data_for_digest = Path(path).read_bytes()
        except FileNotFoundError:
            raise ValueError(f"image {shown} not found") from None
        except IsADirectoryError:
            raise ValueError(f"image {shown} is a folder, not an image file") from None
        except OSError as exc:
            raise ValueError(f"cannot read image {shown}: {exc.strerror or exc}") from None
    else:
        data_for_digest = data
    image_cls = pillow()
    try:
        with image_cls.open(io.BytesIO(data_for_digest)) as image:
            image.load()  # decodes the pixels: a truncated file fails here, not in training
            width, height = image.size
    except Exception as exc:  # Pillow raises many kinds for bad data
        raise ValueError(f"image {shown} does not decode as an image ({exc})") from None
    digest = hashlib.sha256(data_for_digest).hexdigest()
    return ImageRef(where, shown, path, data, width, height, digest)


def check_row_images(record: dict[str, Any], base: Path) -> tuple[list[ImageRef], str]:
    """Resolve and open every image of a row.

    Args:
        record: A row whose messages were checked.
        base: The data file's folder (relative paths start there).

    Returns:
        The row's images in order, and an empty string, or ``[]`` and what is wrong (located at
        the part, e.g. ``messages[0].content[0]: image images/3.png not found``).
    """
    parts = image_parts(record)
    column = record.get("images")
    if column is None and not parts:
        return [], ""
    if column is not None:
        if not isinstance(column, list):
            return [], f"`images` must be a list of images, got {type(column).__name__}"
        given = [w for w, p in parts if p.get("image") is not None]
        if given:
            return [], (
                f"{given[0]}: the row has an `images` column, so its image parts are "
                'placeholders ({"type": "image"}) without their own `image`'
            )
        if len(parts) != len(column):
            return [], (
                f"`images` holds {len(column)} images but the messages have {len(parts)} "
                '{"type": "image"} placeholders: they must match in number'
            )
        sources = [(f"images[{k}]", value) for k, value in enumerate(column)]
    else:
        sources = [(w, p.get("image")) for w, p in parts]
    refs = []
    for where, value in sources:
        try:
            refs.append(_checked(where, value, base))
        except ValueError as exc:
            return [], f"{where}: {exc}"
    return refs, ""


def attach(record: dict[str, Any], base: Path) -> str:
    """Check a row's images and keep them on the row (:data:`ROW_KEY`); an empty string if fine.

    A row whose parts are all text gets plain-string contents, so every template renders it.
    """
    refs, problem = check_row_images(record, base)
    if problem:
        return problem
    if refs:
        record[ROW_KEY] = refs
        return ""
    for key in MESSAGE_KEYS:
        for message in record.get(key) or []:
            if isinstance(message, dict) and isinstance(message.get("content"), list):
                message["content"] = text_of(message["content"])
    return ""
