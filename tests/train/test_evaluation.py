"""eval_conf in the plan, metric failures, per-source curves and lm-eval (docs/evaluating.md)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from finetuning.testing import synthetic_arithmetic, write_jsonl
from finetuning.train.methods import eval_plan
from finetuning.train.reporting.evaluation import _means, _score
from finetuning.train.reporting.report import eval_panels
from finetuning.train.reporting.summary import evaluation_metrics
from tests.helpers import minimal_dpo, minimal_sft, run_main, write_config


def _config(tmp_path, metrics, method="sft", **eval_conf):
    sums = write_jsonl(tmp_path / "sums.jsonl", synthetic_arithmetic(3))
    make = minimal_sft if method == "sft" else minimal_dpo
    data = make("/m", tmp_path / "d.jsonl")
    data["eval_conf"] = {
        "generation": [{"name": "sums", "path": str(sums), "metrics": metrics}],
        **eval_conf,
    }
    return load_config_dict(data, method, tmp_path / "c.yaml").config


def test_metrics_resolve_like_rewards_and_name_their_config_path(tmp_path):
    (tmp_path / "m.py").write_text("def needs_topic(completions, topic):\n    return [0.0]\n")
    (evals,) = eval_plan.resolve_evals(
        _config(tmp_path, [{"function": "exact_answer"}]), tmp_path / "c.yaml"
    )
    assert [m.reward.name for m in evals.metrics] == ["exact_answer"] and len(evals.rows) == 3
    config = _config(tmp_path, [{"function": "m.py:needs_topic"}])
    with pytest.raises(UserError, match=r"eval_conf\.generation\[0\]\.metrics\[0\].*'topic'"):
        eval_plan.resolve_evals(config, tmp_path / "c.yaml")
    config = _config(tmp_path, [{"function": "m.py:missing"}])
    with pytest.raises(UserError, match=r"metrics\[0\]\.function"):
        eval_plan.resolve_evals(config, tmp_path / "c.yaml")


def test_eval_prompts_the_template_cannot_render_are_refused_before_the_model_loads(
    tmp_path, tiny_llama
):
    """Every eval prompt is rendered in the plan: a row the run's template cannot render is a
    located error at validate time, not a crash at the first evaluation."""
    from finetuning.testing import synthetic_chats, synthetic_tool_chats

    rows = synthetic_arithmetic(2)
    tool_row = synthetic_tool_chats(1)[0]
    rows[1] = {**rows[1], "tools": tool_row["tools"]}
    sums = write_jsonl(tmp_path / "sums.jsonl", rows)
    config = minimal_sft(tiny_llama, write_jsonl(tmp_path / "d.jsonl", synthetic_chats(8)))
    config["data_conf"]["chat_template_name"] = "mistral-with-system"  # renders no tools
    config["eval_conf"] = {
        "generation": [
            {"name": "sums", "path": str(sums), "metrics": [{"function": "exact_answer"}]}
        ]
    }
    result = run_main("validate", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 2, result.stderr
    assert "eval_conf.generation rows that cannot be encoded:" in result.stderr
    assert (
        f"{sums}:2: " in result.stderr
        and "mistral-with-system cannot render tools" in result.stderr
    )
    assert f"{sums}:1" not in result.stderr and "Traceback" not in result.stderr


def test_an_eval_named_like_a_validation_source_is_refused(tmp_path):
    config = _config(tmp_path, [{"function": "exact_answer"}])
    data = config.data_conf.model_copy(
        update={"validation_data": type(config.data_conf.training_data)(
            type="CONCATENATION", datasets=[{"path": "v/sums.jsonl"}]
        )}
    )  # fmt: skip
    config = config.model_copy(update={"data_conf": data})
    with pytest.raises(UserError, match="also a validation source's label"):
        eval_plan.resolve_evals(config, tmp_path / "c.yaml")


def test_eval_conf_is_refused_for_methods_that_do_not_run_it(tmp_path):
    with pytest.raises(UserError, match="eval_conf is supported for sft, pretrain runs, not dpo"):
        eval_plan.resolve_evals(
            _config(tmp_path, [{"function": "exact_answer"}], "dpo"), tmp_path / "c.yaml"
        )


def test_a_raising_metric_names_the_function_the_row_and_the_completion(tmp_path):
    (tmp_path / "m.py").write_text(
        "def picky(completions, answer):\n    return [1 / (c != 'boom') for c in completions]\n"
    )
    (geval,) = eval_plan.resolve_evals(
        _config(tmp_path, [{"function": "m.py:picky"}]), tmp_path / "c.yaml"
    )
    rows = list(geval.rows)
    with pytest.raises(UserError) as caught:
        _score(geval, rows, ["p"] * 3, ["fine", "boom", "ok"], [[1]] * 3, None)
    text = str(caught.value)
    assert "generation eval 'sums' failed" in text
    assert "m.py:picky" in text and "ZeroDivisionError" in text
    assert "sums.jsonl:2" in text and "'boom'" in text


def test_eval_rows_with_a_reserved_key_score_like_grpo_rows(tmp_path):
    """A row's own `completion_ids` (TRL's reserved column) is not passed to the metrics, as in
    GRPO: passing it beside the generated ids was a TypeError ("multiple values")."""
    (tmp_path / "m.py").write_text(
        "def n(completions, completion_ids, answer, **kw):\n"
        "    return [float(len(i)) for i in completion_ids]\n"
    )
    (geval,) = eval_plan.resolve_evals(
        _config(tmp_path, [{"function": "m.py:n"}]), tmp_path / "c.yaml"
    )
    rows = [{**r, "completion_ids": "mine"} for r in geval.rows]
    scores = _score(geval, rows, ["p"] * 3, ["a", "b", "c"], [[1], [1, 2], [1, 2, 3]], None)
    assert scores == {"n": [1.0, 2.0, 3.0]}


def test_means_leave_out_none_and_weigh_the_score(tmp_path):
    (geval,) = eval_plan.resolve_evals(
        _config(tmp_path, [{"function": "exact_answer", "weight": 2.0}]), tmp_path / "c.yaml"
    )
    records = [{"scores": {"exact_answer": v}} for v in (1.0, None, 0.0)]
    assert _means(geval, records) == {"eval_sums_exact_answer": 0.5, "eval_sums_score": 1.0}
    assert math.isnan(_means(geval, [{"scores": {"exact_answer": None}}])["eval_sums_exact_answer"])


def test_summary_and_report_have_one_curve_per_source():
    history = [
        {"step": 2, "eval_loss": 1.0, "eval_runtime": 0.1},
        {"step": 2, "eval_a_loss": 1.1, "eval_a_runtime": 0.1},
        {"step": 2, "eval_b_loss": 0.9},
        {"step": 2, "eval_sums_exact_answer": 0.5, "eval_sums_score": 0.5},
    ]
    assert evaluation_metrics(history) == {
        "eval_a_loss": 1.1, "eval_b_loss": 0.9, "eval_sums_exact_answer": 0.5,
        "eval_sums_score": 0.5,
    }  # fmt: skip
    panels = dict((title, keys) for title, _, keys in eval_panels(history))
    assert panels["validation loss by source"] == ["eval_loss", "eval_a_loss", "eval_b_loss"]
    assert panels["generation evals"] == ["eval_sums_exact_answer", "eval_sums_score"]


def test_without_lm_eval_the_plan_says_how_to_install_it(tmp_path, monkeypatch):
    config = _config(tmp_path, [{"function": "exact_answer"}], lm_eval={"tasks": ["x"]})
    real = importlib.util.find_spec
    monkeypatch.setattr(  # as on a machine without the extra (CI installs it)
        importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a)
    )
    assert eval_plan.lm_eval_problems(config) == [eval_plan.LM_EVAL_INSTALL]
    assert "pip install 'finetuning[lm-eval]'" in eval_plan.LM_EVAL_INSTALL


TASK = """task: tiny_sums
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
"""


@pytest.mark.full
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="needs the lm-eval extra")
def test_a_custom_lm_eval_task_runs_offline_from_finetuning_eval(tmp_path, tiny_llama, chat_data):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    rows = [
        {"question": f"What is {a} + {b}?", "choices": [str(a + b), str(a + b + 1)], "label": 0}
        for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]
    ]
    data = write_jsonl(tasks / "tiny.jsonl", rows)
    (tasks / "tiny_sums.yaml").write_text(TASK.format(data=data))
    out = tmp_path / "out"
    config = minimal_sft(tiny_llama, chat_data)
    config["training_args"]["output_dir"] = str(out)
    config["eval_conf"] = {"lm_eval": {"tasks": ["tiny_sums"], "include_path": str(tasks)}}
    result = run_main("eval", write_config(tmp_path / "c.yaml", config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    saved = json.loads(Path(out / "eval-base" / "eval_results.json").read_text())
    assert saved["checkpoint"] is None
    acc = saved["metrics"]["lm_eval/tiny_sums/acc"]
    assert 0.0 <= acc <= 1.0 and acc * 4 == round(acc * 4)  # 4 rows scored
    assert "lm_eval/tiny_sums/acc" in result.stdout
