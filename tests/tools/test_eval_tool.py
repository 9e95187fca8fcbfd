"""`finetuning eval`'s own pieces: where results go, the config hash, the table, bad folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetuning.errors import UserError
from finetuning.tools import eval as eval_tool


def test_results_go_next_to_the_checkpoint_or_under_eval_base(tmp_path):
    assert eval_tool.results_path("run/checkpoint-8", tmp_path) == Path(
        "run/checkpoint-8/eval_results.json"
    )
    assert eval_tool.results_path(None, tmp_path) == tmp_path / "eval-base" / "eval_results.json"


def test_config_hash_ignores_key_order_and_sees_values():
    a = eval_tool.config_hash({"x": 1, "y": {"z": 2}})
    assert a == eval_tool.config_hash({"y": {"z": 2}, "x": 1})
    assert a != eval_tool.config_hash({"x": 1, "y": {"z": 3}})


def test_table_lists_metrics_and_row_counts():
    table = eval_tool.format_table(
        {"checkpoint": "c", "metrics": {"eval_a_loss": 1.23456789}, "rows": {"validation/a": 8}}
    )
    assert "eval_a_loss" in table and "1.23457" in table and "rows: validation/a  8" in table


def test_a_folder_without_a_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a model or adapter folder"):
        eval_tool.load_model(None, str(tmp_path), None)
