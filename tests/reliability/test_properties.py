"""Property tests: random configs and random data rows only ever give a result or a user error."""

from __future__ import annotations

import contextlib
import copy
import json
import string

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from finetuning.config.loading import load_config, load_config_dict
from finetuning.config.yaml_source import read_yaml
from finetuning.data.rows import read_rows, split_lines
from finetuning.errors import UserError
from tests.helpers import minimal_dpo, minimal_sft

KEYS = [
    "data_conf", "training_data", "validation_data", "datasets", "path", "type", "sampling_weight",
    "training_args", "learning_rate", "warmup_ratio", "num_train_epochs", "batchsize_conf",
    "total_train_batch_size", "max_per_device_train_batch_size", "peft_conf", "peft_type",
    "peft_kwargs", "run_conf", "model", "model_args", "resume_from_checkpoint", "sft_args",
    "max_seq_length", "quant_conf", "quantization_type", "load_in_4bit", "tracking", "method",
    "overrides", "lr_multiplier", "ratio", "seed", "chat_template_name", "beta", "loss_type",
]  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(string.printable, max_size=12), st.sampled_from(["LORA", "NO_PEFT", "CONCATENATION",
    "AUTO_SPLIT", "chat-ml", "sft", "dpo", "bits-and-bytes", "auto", "ipo"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))


@st.composite
def mutated_configs(draw):
    base = draw(st.sampled_from([minimal_sft(), minimal_dpo()]))
    config = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(config))
        path = draw(st.sampled_from(paths))
        node = config
        for key in path[:-1]:
            node = node[key]
        action = draw(st.sampled_from(["set", "delete", "add"]))
        if not path:
            continue
        if action == "delete" and isinstance(node, dict):
            node.pop(path[-1], None)
        elif action == "add" and isinstance(
            node.get(path[-1]) if isinstance(node, dict) else None, dict
        ):
            node[path[-1]][draw(st.sampled_from(KEYS))] = draw(values)
        elif isinstance(node, dict):
            node[path[-1]] = draw(values)
    return config


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=mutated_configs(), method=st.sampled_from(["sft", "dpo"]))
def test_random_configs_validate_or_fail_as_user_errors(config, method):
    try:
        load_config_dict(config, method)
    except UserError as exc:
        assert exc.problems and all(p.message for p in exc.problems)


@settings(max_examples=100, deadline=None)
@given(data=values)
def test_any_yaml_value_as_config(data):
    with contextlib.suppress(UserError):
        load_config_dict(data, "sft")


message = st.fixed_dictionaries(
    {},
    optional={
        "role": scalars | st.sampled_from(["user", "assistant", "system"]),
        "content": scalars,
    },
)
rows = st.one_of(
    values,
    st.fixed_dictionaries({"messages": st.lists(message, max_size=4) | values}),
    st.fixed_dictionaries(
        {"prompt_messages": st.lists(message, max_size=2), "chosen_messages": st.lists(message, max_size=2),
         "rejected_messages": st.lists(message, max_size=2) | values}
    ),
)  # fmt: skip


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(rows | st.text(max_size=30), min_size=0, max_size=6),
    method=st.sampled_from(["sft", "dpo"]),
)
def test_random_rows_read_or_fail_as_user_errors(lines, method, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    try:
        for row in read_rows(path, method, "data_conf.training_data.datasets[0].path"):
            assert ("messages" if method == "sft" else "prompt_messages") in row
    except UserError as exc:
        assert exc.problems


# --- YAML key shapes: every key is read as written or reported at its own line ---------------

KEY_WORDS = [
    "yes", "no", "on", "off", "y", "n", "True", "FALSE", "null", "~", "1", "-1", "0x10", "0o7",
    "1e3", ".inf", ".nan", "2024-01-01", "1_000", "learning_rate", "seed", "'yes'", '"1"', "!!str 1",
]  # fmt: skip
key_texts = st.sampled_from(KEY_WORDS) | st.text(string.ascii_letters + string.digits + "_-.~ ", min_size=1, max_size=8)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=key_texts)
@example(key="..")  # a key with dots once lost its line
def test_any_training_args_key_is_located_at_its_line(key, tmp_path):
    base = yaml.safe_dump(minimal_sft(), sort_keys=False).splitlines()
    at = base.index("training_args:") + 2  # after its one key, learning_rate
    lines = [*base[:at], f"  {key}: 1", *base[at:]]
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    try:
        loaded = load_config(path, "sft")
    except UserError as exc:
        text = exc.format()
        if "invalid YAML" not in text:  # a key such as "- x" changes the document's structure
            assert f"c.yaml:{at + 1}: training_args" in text, text
    else:  # only a real training argument written as a name can load
        assert all(isinstance(k, str) for k in loaded.config.training_args)


names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
    lambda k: k not in {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}
)
trees = st.recursive(
    st.integers(0, 9),
    lambda inner: st.dictionaries(names, inner, min_size=1, max_size=3),
    max_leaves=12,
)


def _mapping_paths(tree, prefix=()):
    if isinstance(tree, dict):
        yield prefix
        for key, value in tree.items():
            yield from _mapping_paths(value, (*prefix, key))


def _emit(tree, depth, lines, target, path=()):
    """Append block YAML for ``tree``; the mapping at ``target`` repeats its first key.

    Returns:
        (the repeated key, its first line, its second line) once ``target`` is written, else None.
    """
    indent, start, found = "  " * depth, len(lines), None
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            found = _emit(value, depth + 1, lines, target, (*path, key)) or found
        else:
            lines.append(f"{indent}{key}: {value}")
    if path == target:
        lines.append(f"{indent}{next(iter(tree))}: 0")
        return next(iter(tree)), start + 1, len(lines)
    return found


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_duplicate_key_at_any_depth_is_reported_with_both_lines(data, tmp_path):
    tree = data.draw(st.dictionaries(names, trees, min_size=1, max_size=3))
    target = data.draw(st.sampled_from(list(_mapping_paths(tree))))
    lines: list[str] = []
    key, first, again = _emit(tree, 0, lines, target)
    path = tmp_path / "c.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        read_yaml(path)
    text = info.value.format()
    assert f"duplicate key `{key}` (first at line {first}, again at line {again})" in text, text


# --- the JSONL splitter: rows end at "\n" and nowhere else -----------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(json_values, max_size=6),
    ascii_only=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
    final=st.booleans(),
)
def test_the_jsonl_splitter_returns_every_row_intact(rows, ascii_only, line_end, final):
    text = line_end.join(json.dumps(r, ensure_ascii=ascii_only) for r in rows)
    text += line_end if final and rows else ""
    assert [json.loads(line) for line in split_lines(text)] == rows


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(contents=st.lists(st.text(min_size=1), min_size=1, max_size=5))
def test_rows_with_any_text_are_read_with_their_line_numbers(contents, tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": c}, {"role": "assistant", "content": c}]}
        for c in contents
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    read = read_rows(path, "sft", "k")
    assert [r["messages"][0]["content"] for r in read] == contents
    assert [r["_where"] for r in read] == [f"{path}:{i}" for i in range(1, len(rows) + 1)]
