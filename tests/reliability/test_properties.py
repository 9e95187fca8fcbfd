"""Property tests: random configs and random data rows only ever give a result or a user error."""

from __future__ import annotations

import contextlib
import copy
import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from finetuning.config.loading import load_config_dict
from finetuning.data.rows import read_rows
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
