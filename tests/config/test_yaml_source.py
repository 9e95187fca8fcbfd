"""Strict YAML reading: duplicate keys, keys YAML does not read as names, and deep nesting."""

from __future__ import annotations

import pytest
import yaml

from finetuning.config.loading import load_config
from finetuning.config.yaml_source import MAX_DEPTH, read_yaml
from finetuning.errors import UserError
from tests.helpers import minimal_sft


def _problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        read_yaml(path)
    return [p.format() for p in info.value.problems]


def test_a_second_section_is_a_duplicate_with_both_lines(tmp_path):
    text = yaml.safe_dump(minimal_sft(), sort_keys=False)
    first = text.splitlines().index("training_args:") + 1
    last = len(text.splitlines()) + 1
    (problem,) = _problems(tmp_path, text + "training_args:\n  learning_rate: 0.1\n")
    assert f"c.yaml:{last}: training_args: duplicate key `training_args`" in problem
    assert f"first at line {first}, again at line {last}" in problem


def test_duplicates_are_found_at_any_depth_and_all_reported(tmp_path):
    text = (
        "data_conf:\n"
        "  training_data:\n"
        "    datasets:\n"
        "    - path: a.jsonl\n"
        "      path: b.jsonl\n"
        "training_args:\n"
        "  learning_rate: 0.1\n"
        "  'learning_rate': 0.2\n"
    )
    problems = _problems(tmp_path, text)
    assert len(problems) == 2
    assert "c.yaml:5: data_conf.training_data.datasets[0].path: duplicate key `path`" in problems[0]
    assert "(first at line 4, again at line 5)" in problems[0]
    assert "c.yaml:8: training_args.learning_rate" in problems[1]  # quoting does not hide it


def test_merge_keys_and_aliases_are_not_duplicates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\nthird: *b\n")
    data, _ = read_yaml(path)
    assert data["other"] == {"x": 3, "y": 2}


@pytest.mark.parametrize(
    ("key", "read_as"),
    [
        ("yes", "the boolean true"),
        ("off", "the boolean false"),
        ("~", "null"),
        ("null", "null"),
        ("1", "the number 1"),
        ("0x1f", "the number 31"),
        ("1.5", "the number 1.5"),
        ("2024-01-01", "the date"),
    ],
)
def test_keys_yaml_reads_as_values_are_errors_at_their_line(tmp_path, key, read_as):
    (problem,) = _problems(tmp_path, f"training_args:\n  learning_rate: 0.1\n  {key}: 1\n")
    assert f"c.yaml:3: training_args: the key `{key}` is read by YAML as {read_as}" in problem
    assert f"quote it ('{key}':)" in problem


def test_numeric_keys_are_allowed_for_device_maps(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_conf:\n  model_args:\n    max_memory: {0: 10GiB, cpu: 30GiB}\n")
    data, _ = read_yaml(path)
    assert data["run_conf"]["model_args"]["max_memory"] == {0: "10GiB", "cpu": "30GiB"}


def test_a_boolean_key_in_a_full_config_names_its_own_line(tmp_path):
    text = yaml.safe_dump(minimal_sft(), sort_keys=False)
    lines = text.splitlines()
    at = lines.index("training_args:") + 1
    lines.insert(at, "  yes: 1")
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        load_config(path, "sft")
    assert f"c.yaml:{at + 1}: training_args: the key `yes`" in info.value.format()


@pytest.mark.parametrize(
    "text",
    [
        "x: " + "[" * 3000 + "]" * 3000 + "\n",
        "x: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
        "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 5))
        + "  " * (MAX_DEPTH + 5)
        + "v\n",
    ],
    ids=["flow lists", "flow mappings", "block mappings"],
)
def test_deep_nesting_is_a_located_error_not_a_recursion_error(tmp_path, text):
    (problem,) = _problems(tmp_path, text)
    assert f"nested more than {MAX_DEPTH} levels deep" in problem
    assert "c.yaml:" in problem


def test_brackets_inside_quotes_and_comments_do_not_count(tmp_path):
    path = tmp_path / "c.yaml"
    deep = "[" * (MAX_DEPTH + 5)
    path.write_text(f"a: '{deep}'\nb: \"{deep}\"\nc: 1  # {deep}\n")
    data, _ = read_yaml(path)
    assert data == {"a": deep, "b": deep, "c": 1}
