"""Data sources beyond JSONL: compressed JSONL, Parquet, save_to_disk folders."""

from __future__ import annotations

import copy
import gzip
import json

import pytest

from finetuning.data.prepare import file_digest
from finetuning.data.rows import read_rows
from finetuning.errors import UserError
from finetuning.testing import synthetic_chats, synthetic_tool_chats


def _rows():
    """Plain and tool rows (arguments as JSON strings: a table column has one type)."""
    rows = synthetic_tool_chats(4) + synthetic_chats(4)
    for row in rows:
        for m in row["messages"]:
            for call in m.get("tool_calls", []):
                args = call["function"]["arguments"]
                call["function"]["arguments"] = args if isinstance(args, str) else json.dumps(args)
    return rows


def _clean(rows):
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def _write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_parquet_rows_read_back_without_the_columnar_nulls(tmp_path):
    rows = _rows()
    got = read_rows(_write_parquet(tmp_path / "d.parquet", rows), "sft", "k")
    assert _clean(got) == rows
    assert got[5]["_where"] == f"{tmp_path / 'd.parquet'} row 5"


def test_parquet_problems_are_located_by_row_index(tmp_path):
    rows = _rows()
    bad = copy.deepcopy(rows[2])
    del bad["messages"][1]  # the tool result no longer follows the call
    path = _write_parquet(tmp_path / "d.parquet", [*rows, bad])
    with pytest.raises(UserError) as info:
        read_rows(path, "sft", "k")
    assert f"{path} row 8: messages[1] is a tool result" in info.value.format()


def test_save_to_disk_folder(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = _rows()
    folder = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(folder))
    assert _clean(read_rows(folder, "sft", "k")) == rows
    both = tmp_path / "both"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(both))
    with pytest.raises(UserError, match=r"DatasetDict with the splits train: point the path"):
        read_rows(both, "sft", "k")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not one written by save_to_disk"):
        read_rows(tmp_path / "plain", "sft", "k")


def test_folder_cache_digest_follows_its_contents(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "saved"
    Dataset.from_list(_rows()).save_to_disk(str(folder))
    first = file_digest(folder)
    assert file_digest(folder) == first
    other = tmp_path / "other"
    Dataset.from_list(_rows()[:3]).save_to_disk(str(other))
    assert file_digest(other) != first


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_compressed_jsonl_is_read_like_jsonl(suffix, tmp_path):
    import zstandard

    compress = gzip.compress if suffix.endswith(".gz") else zstandard.compress
    rows = _rows()
    path = tmp_path / f"d{suffix}"
    path.write_bytes(compress(_jsonl(rows)))
    got = read_rows(path, "sft", "k")
    assert _clean(got) == rows
    assert got[1]["_where"] == f"{path}:2"
    path.write_bytes(compress(_jsonl(rows[:1]) + b'{"messages": 3}\n'))
    with pytest.raises(UserError, match=rf"{path}:2: `messages` must be a list"):
        read_rows(path, "sft", "k")


def test_corrupt_compressed_file_is_a_user_error(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(UserError, match="cannot decompress"):
        read_rows(path, "sft", "k")


def test_a_parquet_source_prepares_like_jsonl(tmp_path, tiny_tokenizer):
    from finetuning.config.data import ChatTemplateName, ChatTrainValidConfig
    from finetuning.data.encode import EncodeSettings
    from finetuning.data.prepare import prepare_data
    from finetuning.testing import write_jsonl

    rows = synthetic_chats(6)
    sources = {"jsonl": write_jsonl(tmp_path / "d.jsonl", rows)}
    sources["parquet"] = _write_parquet(tmp_path / "d.parquet", rows)
    settings = EncodeSettings(ChatTemplateName.KEEP_ORIGINAL, 256, completions_only=True)
    stores = {}
    for kind, path in sources.items():
        conf = ChatTrainValidConfig.model_validate(
            {"training_data": {"type": "CONCATENATION", "datasets": [{"path": str(path)}]}}
        )
        stores[kind] = prepare_data(conf, tiny_tokenizer, settings, use_cache=False).train.store
    assert stores["jsonl"].input_ids.tolist() == stores["parquet"].input_ids.tolist()
    assert stores["jsonl"].labels.tolist() == stores["parquet"].labels.tolist()
