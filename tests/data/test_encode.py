"""Tokenisation with loss masks: exactly the assistant spans are trained, for every template."""

from __future__ import annotations

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.encode import (
    IGNORE,
    NOTHING_TRAINED,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    encode_chunk,
    encode_rows,
)
from finetuning.data.templates import SPECS
from tests.data.test_templates import MULTI, SPANS


@pytest.fixture(scope="module")
def tokenizer(template_tokenizer):
    return template_tokenizer


def _settings(template, completions_only=True, max_length=1000, handling="filter"):
    return EncodeSettings(template, max_length, handling, completions_only)


@pytest.mark.parametrize("template", list(T))
def test_trained_tokens_are_exactly_the_assistant_spans(template, tokenizer):
    store = encode_chunk([{"messages": MULTI}], tokenizer, _settings(template))
    ids, labels = store.row(0)
    trained = labels != IGNORE
    assert (labels[trained] == ids[trained]).all()
    # Contiguous runs of trained tokens decode to the spans. A token that straddles a span's
    # start (byte-level BPE joins " [" in "U1 [/INST]") is trained whole, so compare after the
    # leading whitespace.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained.astype(int), [0]])))
    runs = [
        tokenizer.decode(ids[a:b].tolist()) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]
    assert [r.lstrip() for r in runs] == [s.lstrip() for s in SPANS[template]]


@pytest.mark.parametrize("template", list(T))
def test_end_marker_is_trained(template, tokenizer):
    store = encode_chunk([{"messages": MULTI}], tokenizer, _settings(template))
    ids, labels = store.row(0)
    end = SPECS[template].end_marker if template in SPECS else None
    end_id = tokenizer.convert_tokens_to_ids(end or tokenizer.eos_token)
    assert ((ids == end_id) & (labels == end_id)).sum() == 2  # both assistant turns


@pytest.mark.parametrize("template", list(T))
def test_full_sequence_training_labels_every_token(template, tokenizer):
    store = encode_chunk(
        [{"messages": MULTI}], tokenizer, _settings(template, completions_only=False)
    )
    ids, labels = store.row(0)
    assert (labels == ids).all()


@pytest.mark.parametrize("template", list(T))
def test_exactly_one_bos(template, tokenizer):
    store = encode_chunk([{"messages": MULTI}], tokenizer, _settings(template))
    ids, _ = store.row(0)
    assert ids[0] == tokenizer.bos_token_id
    assert (ids == tokenizer.bos_token_id).sum() == 1


def test_filter_drops_and_truncate_cuts(tokenizer):
    rows = [{"messages": MULTI}, {"messages": MULTI[:3]}]
    full = encode_chunk(rows, tokenizer, _settings(T.CHAT_ML))
    limit = int(full.lengths()[1]) + 1  # the short row fits, the long one does not
    filtered = encode_chunk(rows, tokenizer, _settings(T.CHAT_ML, max_length=limit))
    assert filtered.status.tolist() == [TOO_LONG, OK]
    assert filtered.lengths().tolist() == [0, full.lengths()[1]]
    cut = encode_chunk(rows, tokenizer, _settings(T.CHAT_ML, max_length=limit, handling="truncate"))
    assert cut.status.tolist() == [TRUNCATED, OK]
    assert cut.lengths()[0] == limit
    assert cut.full_lengths.tolist() == full.lengths().tolist()


def test_truncation_that_removes_every_trained_token_is_reported(tokenizer):
    settings = _settings(T.CHAT_ML, max_length=6, handling="truncate")
    store = encode_chunk([{"messages": MULTI}], tokenizer, settings)
    assert store.status.tolist() == [NOTHING_TRAINED]


@pytest.mark.full
def test_parallel_encoding_equals_serial(tokenizer, monkeypatch):
    from finetuning.data import encode
    from finetuning.testing import synthetic_chats

    monkeypatch.setattr(encode, "PARALLEL_MIN_ROWS", 0)  # use the worker pool for a small input
    rows = synthetic_chats(4500, seed=3)
    settings = _settings(T.CHAT_ML)
    serial = encode_rows(rows, tokenizer, settings, num_workers=1, progress=False)
    parallel = encode_rows(rows, tokenizer, settings, num_workers=2, progress=False)
    for name in ("input_ids", "labels", "offsets", "status"):
        assert np.array_equal(getattr(serial, name), getattr(parallel, name))


# --- the shared "encode rows, collect located problems" loop ----------------------------------


def test_every_bad_row_is_reported_with_its_location_not_only_the_first(tokenizer):
    from finetuning.data.preference import encode_preference_chunk
    from finetuning.data.prompts import encode_prompt_chunk
    from finetuning.errors import UserError

    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    agent = [
        {"role": "user", "content": "U"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
    ]
    good = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    chat = [{"messages": m, "_where": f"d.jsonl:{i}"} for i, m in enumerate([agent, good, agent])]
    prompt = [{"prompt_messages": r["messages"], "_where": r["_where"]} for r in chat]
    pairs = [{**r, "chosen_messages": good[1:], "rejected_messages": good[1:]} for r in prompt]
    settings = _settings(T.MISTRAL_WITH_SYSTEM)  # renders no tool calls: the agent rows fail
    for encode, rows, header in [
        (encode_chunk, chat, "chat"),
        (encode_prompt_chunk, prompt, "prompt"),
        (encode_preference_chunk, pairs, "preference"),
    ]:
        with pytest.raises(UserError) as info:
            encode(rows, tokenizer, settings)
        assert info.value.header == f"{header} rows that cannot be encoded:"
        assert [p.where for p in info.value.problems] == ["d.jsonl:0", "d.jsonl:2"], header
