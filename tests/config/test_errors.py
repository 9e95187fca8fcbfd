"""Loading reports every problem at once, with the config path, line and a suggestion."""

from __future__ import annotations

import pytest

from finetuning.config.loading import load_config, load_config_dict
from finetuning.config.training_args import BATCH_FIELDS
from finetuning.errors import UserError
from tests.helpers import minimal_dpo, minimal_sft, write_config


def _messages(raw, method="sft") -> list[str]:
    with pytest.raises(UserError) as info:
        load_config_dict(raw, method)
    return [p.format() for p in info.value.problems]


@pytest.mark.parametrize(
    ("section", "path", "bad_key", "suggestion"),
    [
        ("top", [], "data_confs", "data_conf"),
        ("sft_args", ["sft_args"], "max_seq_lenght", "max_seq_length"),
        ("run_conf", ["run_conf"], "modell", "model"),
        ("overrides", ["overrides"], "lr_multiplyer", "lr_multiplier"),
        ("dataset", ["data_conf", "training_data", "datasets", 0], "pathh", "path"),
        ("split", ["data_conf", "validation_data"], "ratoi", None),
    ],
)
def test_unknown_keys_at_several_depths(section, path, bad_key, suggestion):
    raw = minimal_sft()
    if section == "split":
        raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT"}
    raw.setdefault("overrides", {})
    node = raw
    for part in path:
        node = node[part]
    node[bad_key] = 1
    messages = _messages(raw)
    expected_path = ".".join(str(p) for p in path).replace(".0", "[0]")
    full = f"{expected_path}.{bad_key}" if expected_path else bad_key
    hit = [m for m in messages if full in m]
    assert hit, messages
    assert "Additional properties are not allowed" in hit[0]
    if suggestion:
        assert f"did you mean `{suggestion}`?" in hit[0]


def test_misspelt_training_arg_gets_a_suggestion():
    messages = _messages(minimal_sft(training_args={"learnig_rate": 1e-4}))
    assert messages == [
        "training_args.learnig_rate: Additional properties are not allowed: unknown training "
        "argument (did you mean `learning_rate`?)"
    ]


def test_every_problem_is_reported_at_once():
    raw = minimal_sft(training_args={"learnig_rate": 1, "per_device_train_batch_size": 8})
    raw["sft_args"]["max_seq_length"] = "long"
    raw["data_conf"]["chat_template_name"] = "chatml"
    raw["peft_conf"] = {"peft_type": "LORAX"}
    messages = _messages(raw)
    assert len(messages) == 5, messages
    joined = "\n".join(messages)
    assert (
        "data_conf.chat_template_name: 'chatml' is not allowed (allowed: mistral-with-system"
        in joined
    )
    assert "did you mean `chat-ml`?" in joined
    assert "peft_conf.peft_type: 'LORAX' is not allowed" in joined
    assert "did you mean `LORA`?" in joined
    assert "sft_args.max_seq_length:" in joined


@pytest.mark.parametrize("field", BATCH_FIELDS)
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_batch_fields_are_forbidden_even_at_their_default(field, method):
    default = 8 if "batch_size" in field else 1
    maker = minimal_sft if method == "sft" else minimal_dpo
    messages = _messages(maker(training_args={field: default}), method)
    assert len(messages) == 1
    assert messages[0].startswith(f"training_args.{field}: may not be set: batchsize_conf owns")


def test_wrong_type_and_choice_in_training_args():
    messages = _messages(
        minimal_sft(training_args={"num_train_epochs": "three", "lr_scheduler_type": "cosin"})
    )
    assert "training_args.num_train_epochs: expected float, got str 'three'" in messages
    assert any(
        m.startswith("training_args.lr_scheduler_type: 'cosin' is not allowed") and "`cosine`" in m
        for m in messages
    )


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data_conf:\n  training_data: [1, 2\nrun_conf: {}\n")
    with pytest.raises(UserError) as info:
        load_config(path, "sft")
    assert f"{path}:3:" in info.value.format()
    assert "invalid YAML" in info.value.format()


def test_errors_name_the_line_in_the_file(tmp_path):
    raw = minimal_sft()
    raw["training_args"] = {"learning_rate": 1e-3, "warmup_ratoi": 0.1}
    path = write_config(tmp_path / "c.yaml", raw)
    with pytest.raises(UserError) as info:
        load_config(path, "sft")
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "warmup_ratoi" in text)
    assert f"{path}:{line}: training_args.warmup_ratoi" in info.value.format()


def test_evaluation_without_validation_data_is_an_error():
    messages = _messages(minimal_sft(training_args={"eval_strategy": "steps"}))
    assert any("validation_data is NONE" in m for m in messages)


@pytest.mark.parametrize(
    ("weights", "message"), [([0.0, 0.0], "at least one sampling weight"), ([1.0, -1.0], ">= 0")]
)
def test_bad_mix_weights(weights, message):
    raw = minimal_sft()
    raw["data_conf"]["training_data"] = {
        "type": "PRECOMPUTE_WEIGHTED_MIX",
        "datasets": [{"path": "/a", "sampling_weight": w} for w in weights],
    }
    assert any(message in m for m in _messages(raw))


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.1])
def test_split_ratio_out_of_range(ratio):
    raw = minimal_sft()
    raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": ratio}
    assert any("data_conf.validation_data.ratio" in m for m in _messages(raw))
