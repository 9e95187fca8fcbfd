"""``weight_by: tokens``, the mixture table and source labels (docs/evaluating.md)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from finetuning.config.data import ChatTrainValidConfig, source_labels
from finetuning.data import sources


def _lengths(rng, rows_short=400, rows_long=100):
    short = rng.integers(8, 16, rows_short)
    long = rng.integers(150, 250, rows_long)
    return [rows_short, rows_long], np.concatenate([short, long])


def _mix(weights, weight_by, seed=0):
    rows, lengths = _lengths(np.random.default_rng(seed))
    draw = weights
    if weight_by == "tokens":
        draw = sources.token_draw(weights, rows, lengths, np.ones(len(lengths), bool))
    mixed = sources.weighted_mix(rows, draw, seed=1)
    return sources.mixture_table(["chat", "docs"], weights, weight_by, rows, lengths, mixed)


def test_token_weights_realize_the_requested_token_shares():
    table = _mix([3.0, 1.0], "tokens")
    assert [r["share_requested"] for r in table] == [0.75, 0.25]
    for row in table:
        assert row["share_realized"] == pytest.approx(row["share_requested"], abs=0.05)
        assert row["tokens_realized"] == pytest.approx(row["tokens_requested"], rel=0.1)
    # By rows the same weights give the long documents most of the tokens.
    by_rows = _mix([3.0, 1.0], "rows")
    docs_tokens = by_rows[1]["tokens_realized"] / sum(r["tokens_realized"] for r in by_rows)
    assert docs_tokens > 0.6
    assert by_rows[0]["share_realized"] == pytest.approx(0.75, abs=0.05)  # a share of rows


def test_a_source_too_small_for_its_share_is_repeated_and_counted():
    table = _mix([1.0, 99.0], "tokens")  # 100 documents cannot give 99% without repeats
    docs = table[1]
    assert docs["rows_realized"] > docs["rows_available"]
    assert docs["repeated_rows"] == docs["rows_realized"] - docs["rows_available"]
    lines = sources.format_mixture(table, "tokens")
    assert "docs: weight 99" in lines[2] and f"({docs['repeated_rows']} repeated)" in lines[2]


def test_by_source_groups_validation_indices():
    parts = sources.by_source(np.array([10, 11, 13, 15, 16]), [3, 4], ["a", "b"], first=10)
    assert parts["a"].tolist() == [10, 11] and parts["b"].tolist() == [13, 15, 16]


def _data(datasets, kind="CONCATENATION"):
    return {
        "training_data": {"type": "CONCATENATION", "datasets": [{"path": "t.jsonl"}]},
        "validation_data": {"type": kind, "datasets": datasets},
    }


def test_labels_default_to_the_file_stem_and_duplicates_are_refused():
    config = ChatTrainValidConfig.model_validate(
        _data([{"path": "/d/math qa.jsonl.gz"}, {"path": "/e/math qa.jsonl", "label": "other"}])
    )
    assert source_labels(config.validation_data.datasets) == ["math_qa", "other"]
    # Equal stems are common (a/train.jsonl, b/train.jsonl): numbered, never refused.
    config = ChatTrainValidConfig.model_validate(
        _data(
            [{"path": "a/math.jsonl"}, {"path": "b/math.jsonl"}, {"path": "math_2", "label": "x"}]
        )
    )
    assert source_labels(config.validation_data.datasets) == ["math", "math_2", "x"]
    config = ChatTrainValidConfig.model_validate(
        _data([{"path": "a/math.jsonl"}, {"path": "b/q.jsonl", "label": "math"}])
    )
    assert source_labels(config.validation_data.datasets) == ["math_2", "math"]
    with pytest.raises(ValidationError, match="share the label 'math'"):
        ChatTrainValidConfig.model_validate(
            _data([{"path": "a/x.jsonl", "label": "math"}, {"path": "b/y.jsonl", "label": "math"}])
        )
    with pytest.raises(ValidationError, match="label"):
        ChatTrainValidConfig.model_validate(_data([{"path": "a.jsonl", "label": "has space"}]))


@pytest.mark.full
def test_validate_prints_the_realized_token_shares(tmp_path, tiny_llama):
    import re

    from finetuning.testing import synthetic_chats, write_jsonl
    from tests.helpers import minimal_sft, run_main, write_config

    chats = synthetic_chats(300, seed=0)
    long = synthetic_chats(80, seed=1)
    for row in long:  # long answers: many more tokens per row
        row["messages"][-1]["content"] = " ".join([row["messages"][-1]["content"]] * 6)
    short_path = write_jsonl(tmp_path / "short.jsonl", chats)
    long_path = write_jsonl(tmp_path / "long.jsonl", long)
    config = minimal_sft(tiny_llama, short_path, sft_args={"max_seq_length": 2048})
    config["data_conf"]["training_data"] = {
        "type": "PRECOMPUTE_WEIGHTED_MIX",
        "weight_by": "tokens",
        "datasets": [
            {"path": str(short_path), "sampling_weight": 1.0, "label": "chat"},
            {"path": str(long_path), "sampling_weight": 1.0},
        ],
    }
    result = run_main("validate", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    shares = dict(re.findall(r"(chat|long): weight 1, .* share 50\.0%/([\d.]+)%", text))
    assert set(shares) == {"chat", "long"}, text[-3000:]
    for value in shares.values():
        assert float(value) == pytest.approx(50.0, abs=5.0)
