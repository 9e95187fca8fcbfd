"""Raw-text documents (pretrain) and chunking long examples (length_handling: chunk)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.config.loading import load_config_dict
from finetuning.data.encode import IGNORE, OK, TOO_LONG, TRUNCATED, EncodeSettings
from finetuning.data.preflight import preflight
from finetuning.data.rows import read_rows
from finetuning.data.text import chunk_split, encode_text_chunk
from finetuning.errors import UserError
from finetuning.testing import synthetic_chats, write_jsonl
from tests.helpers import minimal_pretrain, minimal_sft

DOCS = [{"text": "the apple is red."}, {"text": " ".join(["one plus two is three."] * 12)}]


def _settings(max_length, handling="chunk"):
    return EncodeSettings(T.KEEP_ORIGINAL, max_length, handling)


def test_a_document_is_bos_text_eos_every_token_trained(tiny_tokenizer):
    store = encode_text_chunk(DOCS[:1], tiny_tokenizer, _settings(1000))
    ids, labels = store.row(0)
    text_ids = tiny_tokenizer("the apple is red.", add_special_tokens=False)["input_ids"]
    assert ids.tolist() == [tiny_tokenizer.bos_token_id, *text_ids, tiny_tokenizer.eos_token_id]
    assert labels.tolist() == ids.tolist()


def test_long_documents_filter_truncate_or_stay_whole_for_chunking(tiny_tokenizer):
    full = len(encode_text_chunk(DOCS[1:], tiny_tokenizer, _settings(1000)).row(0)[0])
    for handling, status, length in (
        ("filter", TOO_LONG, 0),
        ("truncate", TRUNCATED, 20),
        ("chunk", OK, full),
    ):
        store = encode_text_chunk(DOCS, tiny_tokenizer, _settings(20, handling))
        assert store.status.tolist() == [OK, status]
        assert len(store.row(1)[0]) == length
        assert store.full_lengths[1] == full


def test_chunks_cover_each_document_in_order_and_fit(tiny_tokenizer):
    store = encode_text_chunk(DOCS * 2, tiny_tokenizer, _settings(20))
    lengths = store.lengths()
    chunks = chunk_split(store, np.array([1, 0, 3]), 20)
    pieces = [chunks.store.row(int(i))[0] for i in chunks.indices]
    assert all(0 < len(p) <= 20 for p in pieces)
    expected = [store.row(1)[0], store.row(0)[0], store.row(3)[0]]
    assert np.concatenate(pieces).tolist() == np.concatenate(expected).tolist()
    n = -(-lengths[1] // 20)
    assert (chunks.split_examples, chunks.chunks_of_split) == (2, 2 * n)
    assert len(chunks.indices) == 2 * n + 1


def test_text_rows_of_the_wrong_shape_name_the_row_and_the_shape(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"messages": []}\n{"text": 3}\n{"text": ""}\n')
    with pytest.raises(UserError) as err:
        read_rows(path, "pretrain", "k")
    text = str(err.value)
    assert (
        f"{path}:2: missing `text` (this looks like a sft row); a pretrain row has `text`" in text
    )
    assert f"{path}:3: `text` must be a string (one document), got int" in text
    assert f"{path}:4: `text` is empty" in text
    chat = write_jsonl(tmp_path / "c.jsonl", [{"text": "a document"}])
    with pytest.raises(UserError, match="this looks like a pretrain row"):
        read_rows(chat, "sft", "k")


def test_pretrain_preflight_counts_split_documents_and_keeps_chunks_on_one_side(
    tiny_llama, tmp_path, monkeypatch
):
    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(tmp_path / "cache"))
    docs = [{"text": f"doc {i}: " + "the apple is red. " * (1 + 8 * (i % 2))} for i in range(20)]
    raw = minimal_pretrain(tiny_llama, write_jsonl(tmp_path / "d.jsonl", docs))
    raw["sft_args"] = {"max_seq_length": 24}
    raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.2}
    report = preflight(load_config_dict(raw, "pretrain"))
    data = report.data
    counts = data.status_counts
    assert counts["split_documents"] > 0 and counts["chunks"] > counts["split_documents"]
    line = f"{counts['split_documents']} rows longer than 24 tokens were split into"
    assert any(line in x for x in report.lines), report.lines
    assert max(data.train.lengths()) <= 24 and max(data.valid.lengths()) <= 24

    def docs_of(split):  # the document each chunk came from (its "doc N:" start)
        tok = report.setup.tokenizer
        seen = set()
        for i in split.indices:
            text = tok.decode(split.store.row(int(i))[0].tolist(), skip_special_tokens=True)
            if text.startswith("doc "):
                seen.add(text.split(":")[0])
        return seen

    assert docs_of(data.train).isdisjoint(docs_of(data.valid))
    assert len(docs_of(data.train)) + len(docs_of(data.valid)) == 20


def test_sft_chunk_trains_whole_conversations_only(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "c.jsonl", synthetic_chats(12))
    raw = minimal_sft(tiny_llama, data)
    raw["sft_args"] = {"max_seq_length": 16, "length_handling": "chunk"}
    report = preflight(load_config_dict(raw, "sft"))
    assert max(report.data.train.lengths()) <= 16
    assert report.data.status_counts["chunks"] > len(report.data.rows)
    labels = np.concatenate(
        [report.data.train.store.row(int(i))[1] for i in report.data.train.indices]
    )
    assert (labels != IGNORE).all()  # the whole conversation is trained
    raw["sft_args"]["train_on_completions_only"] = True
    with pytest.raises(
        UserError, match="length_handling: chunk needs train_on_completions_only: false"
    ):
        load_config_dict(raw, "sft")


def test_pretrain_config_defaults_and_refusals():
    config = load_config_dict(minimal_pretrain(), "pretrain").config
    assert config.data_conf.chat_template_name == T.KEEP_ORIGINAL
    assert config.sft_args.length_handling == "chunk"
    raw = minimal_pretrain()
    raw["data_conf"]["chat_template_name"] = "chat-ml"
    with pytest.raises(UserError, match="pretrain renders no chat template"):
        load_config_dict(raw, "pretrain")
    raw = minimal_pretrain(sft_args={"train_on_completions_only": True})
    with pytest.raises(UserError, match="unknown key"):
        load_config_dict(raw, "pretrain")
    assert json.dumps(config.model_dump(mode="json"))  # pure data
