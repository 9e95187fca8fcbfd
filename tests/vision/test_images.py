"""Image rows while reading: every source kind loads, every bad image is a located error."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from finetuning.data.images import ROW_KEY
from finetuning.data.rows import read_rows
from finetuning.errors import UserError


def _png(size=(8, 6), color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(image: dict, text="what is it?") -> dict:
    return {
        "messages": [
            {"role": "user", "content": [image, {"type": "text", "text": text}]},
            {"role": "assistant", "content": "red."},
        ]
    }


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_source_kind_loads(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(_png((8, 6)))
    absolute = tmp_path / "b.png"
    absolute.write_bytes(_png((5, 4)))
    uri = "data:image/png;base64," + base64.b64encode(_png((3, 2))).decode()
    rows = [
        _row({"type": "image", "image": "images/a.png"}),  # relative to the data file
        _row({"type": "image", "image": str(absolute)}),
        _row({"type": "image", "image": f"file://{absolute}"}),
        _row({"type": "image", "image": uri}),
        {**_row({"type": "image"}), "images": ["images/a.png"]},  # TRL's convention
    ]
    read = read_rows(_write(tmp_path / "data.jsonl", rows), "sft", "k")
    sizes = [(r[ROW_KEY][0].width, r[ROW_KEY][0].height) for r in read]
    assert sizes == [(8, 6), (5, 4), (5, 4), (3, 2), (8, 6)]
    assert read[0][ROW_KEY][0].digest == read[4][ROW_KEY][0].digest  # the same bytes


def test_the_datasets_image_feature_loads_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = _row({"type": "image"})
    row["messages"][1]["content"] = [{"type": "text", "text": "red."}]  # one column type
    rows = [{**row, "images": [{"bytes": _png((7, 7)), "path": "x.png"}]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    read = read_rows(tmp_path / "data.parquet", "sft", "k")
    assert (read[0][ROW_KEY][0].width, read[0][ROW_KEY][0].data is not None) == (7, True)


def test_text_only_parts_become_plain_strings(tmp_path):
    row = _row({"type": "text", "text": "hello "}, "there")
    read = read_rows(_write(tmp_path / "d.jsonl", [row]), "sft", "k")
    assert read[0]["messages"][0]["content"] == "hello there"
    assert ROW_KEY not in read[0]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            _row({"type": "image", "image": "images/3.png"}),
            "data.jsonl:2: messages[0].content[0]: image images/3.png not found",
        ),
        (
            _row({"type": "image", "image": "broken.png"}),
            "data.jsonl:2: messages[0].content[0]: image broken.png does not decode",
        ),
        (
            _row({"type": "image", "image": "data:image/png;base64,###"}),
            "data.jsonl:2: messages[0].content[0]: is a data URI whose base64 does not decode",
        ),
        (
            _row({"type": "image", "image": "https://x.org/a.png"}),
            "data.jsonl:2: messages[0].content[0]: https://x.org/a.png is a URL",
        ),
        (
            _row({"type": "image"}),
            "data.jsonl:2: messages[0].content[0]: needs an image",
        ),
        (
            {**_row({"type": "image"}), "images": ["ok.png", "ok.png"]},
            "data.jsonl:2: `images` holds 2 images but the messages have 1",
        ),
        (
            {**_row({"type": "image", "image": "ok.png"}), "images": ["ok.png"]},
            "data.jsonl:2: messages[0].content[0]: the row has an `images` column",
        ),
        (
            {**_row({"type": "image"}), "images": ["missing.png"]},
            "data.jsonl:2: images[0]: image missing.png not found",
        ),
        (
            _row({"type": "video", "video": "a.mp4"}),
            "data.jsonl:2: messages[0].content must be a string or a list of parts",
        ),
    ],
)
def test_bad_images_are_located_errors(tmp_path, row, expected):
    (tmp_path / "ok.png").write_bytes(_png())
    (tmp_path / "broken.png").write_bytes(_png()[:40])  # a truncated PNG
    good = _row({"type": "image", "image": "ok.png"})
    path = _write(tmp_path / "data.jsonl", [good, row])
    with pytest.raises(UserError) as caught:
        read_rows(path, "sft", "k")
    assert expected in str(caught.value).replace(f"{tmp_path}/", "")


def test_the_datasets_image_feature_loads_from_save_to_disk(tmp_path):
    import datasets

    image = tmp_path / "c.png"
    image.write_bytes(_png((9, 5)))
    features = datasets.Features(
        {
            "messages": [{"role": datasets.Value("string"), "content": [
                {"type": datasets.Value("string"), "text": datasets.Value("string")}]}],
            "images": datasets.Sequence(datasets.Image()),
        }
    )  # fmt: skip
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image", "text": None}]},
            {"role": "assistant", "content": [{"type": "text", "text": "red."}]},
        ],
        "images": [str(image)],
    }
    datasets.Dataset.from_list([row], features=features).save_to_disk(tmp_path / "saved")
    read = read_rows(tmp_path / "saved", "sft", "k")
    assert (read[0][ROW_KEY][0].width, read[0][ROW_KEY][0].height) == (9, 5)


def test_without_pillow_the_error_names_the_vision_extra(tmp_path, monkeypatch):
    import sys

    (tmp_path / "a.png").write_bytes(_png())
    path = _write(tmp_path / "data.jsonl", [_row({"type": "image", "image": "a.png"})])
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` raises ImportError
    with pytest.raises(UserError, match=r"pip install 'finetuning\[vision\]'"):
        read_rows(path, "sft", "k")
