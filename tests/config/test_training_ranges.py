"""Numeric training_args outside their meaningful range are user errors at load, SFT and DPO."""

from __future__ import annotations

import math

import pytest

from finetuning.config.hf_fields import fields_for
from finetuning.config.loading import load_config_dict
from finetuning.config.training_args import ENGINE_FIELDS
from finetuning.config.training_ranges import RANGES
from finetuning.errors import UserError
from tests.helpers import minimal_dpo, minimal_sft

MAKERS = {"sft": minimal_sft, "dpo": minimal_dpo}

BAD = [
    ("num_train_epochs", -1, "must be >= 0"),
    ("num_train_epochs", math.inf, "must be a finite number, got inf"),
    ("num_train_epochs", math.nan, "must be a finite number, got nan"),
    ("learning_rate", math.nan, "must be a finite number"),
    ("learning_rate", -1e-4, "must be >= 0"),
    ("seed", -1, "must be >= 0 and <= 4294967295"),
    ("seed", 2**32, "must be >= 0 and <= 4294967295"),
    ("data_seed", -3, "must be >= 0"),
    ("max_steps", -2, "must be >= -1"),
    ("warmup_steps", -0.1, "must be >= 0"),
    ("weight_decay", -0.01, "must be >= 0"),
    ("max_grad_norm", -1.0, "must be >= 0"),
    ("adam_beta1", 1.0, "must be >= 0 and < 1"),
    ("adam_beta2", -0.5, "must be >= 0 and < 1"),
    ("adam_epsilon", 0.0, "must be > 0"),
    ("logging_steps", 0, "must be > 0"),
    ("save_steps", -5, "must be > 0"),
    ("dataloader_num_workers", -1, "must be >= 0"),
    ("label_smoothing_factor", 1.0, "must be >= 0 and < 1"),
    ("eval_delay", math.inf, "must be a finite number"),  # not in the table: finite still holds
]


@pytest.mark.parametrize("method", ["sft", "dpo"])
@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=lambda v: str(v))
def test_out_of_range_values_name_the_key(method, key, value, message):
    config = MAKERS[method]()
    config["training_args"] = {"learning_rate": 1e-3, key: value}
    with pytest.raises(UserError) as info:
        load_config_dict(config, method)
    (problem,) = info.value.problems
    assert problem.where == f"training_args.{key}"
    assert message in problem.message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("beta", 0.0, "must be > 0"),
        ("beta", -0.1, "must be > 0"),
        ("label_smoothing", 0.6, "must be >= 0 and <= 0.5"),
        ("max_length", 0, "must be >= 1"),
        ("max_prompt_length", -1, "must be >= 1"),
    ],
)
def test_dpo_ranges(key, value, message):
    config = minimal_dpo(training_args={key: value})
    with pytest.raises(UserError) as info:
        load_config_dict(config, "dpo")
    assert f"training_args.{key}: {message}" in info.value.format()


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_zero_epochs_needs_max_steps(method):
    with pytest.raises(UserError, match="is 0 and max_steps is not set"):
        load_config_dict(MAKERS[method](training_args={"num_train_epochs": 0}), method)
    config = MAKERS[method](training_args={"num_train_epochs": 0, "max_steps": 5})
    assert load_config_dict(config, method).config.training_args["max_steps"] == 5


@pytest.mark.parametrize(
    "args",
    [
        {"num_train_epochs": 0.5, "learning_rate": 0.0, "seed": 0},
        {"max_steps": -1, "warmup_steps": 0.1, "save_steps": 0.25, "max_grad_norm": 0},
        {"max_steps": 0, "seed": 2**32 - 1, "adam_beta2": 0.95, "weight_decay": 0.1},
    ],
)
def test_values_in_range_are_accepted(args):
    assert load_config_dict(minimal_sft(training_args=args), "sft").config.training_args == args


def test_every_ranged_field_exists_in_a_method():
    known = {*fields_for("sft"), *fields_for("dpo"), *ENGINE_FIELDS["dpo"]}
    assert set(RANGES) <= known, set(RANGES) - known


def test_a_training_arg_key_that_is_not_a_string():
    config = minimal_sft(training_args={"learning_rate": 1e-3, 1: "foo"})
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    (problem,) = info.value.problems
    assert problem.where == "training_args.1"
    assert "the key 1 is not a string, so not the name of a training argument" in problem.message


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_and_multipliers_are_errors(value):
    mix = minimal_sft()
    mix["data_conf"]["training_data"] = {
        "type": "PRECOMPUTE_WEIGHTED_MIX",
        "datasets": [{"path": "/a", "sampling_weight": value}, {"path": "/b"}],
    }
    with pytest.raises(UserError, match="sampling_weight"):
        load_config_dict(mix, "sft")
    with pytest.raises(UserError, match=r"overrides\.lr_multiplier"):
        load_config_dict(minimal_sft(overrides={"lr_multiplier": value}), "sft")


@pytest.mark.parametrize(
    ("method", "key", "value", "message"),
    [
        ("kto", "desirable_weight", -1, "must be > 0"),
        ("kto", "undesirable_weight", 0, "must be > 0"),
        ("simpo", "cpo_alpha", -1.0, "must be >= 0"),
        ("simpo", "simpo_gamma", -0.5, "must be >= 0"),
        ("orpo", "beta", 0.0, "must be > 0"),
        ("grpo", "temperature", 0.0, "must be > 0"),
        ("grpo", "top_k", -1, "must be >= 0"),
        ("grpo", "min_p", 1.5, "must be >= 0 and <= 1"),
        ("grpo", "delta", 1.0, "must be > 1"),
        ("grpo", "epsilon_high", -0.1, "must be >= 0"),
        ("grpo", "top_entropy_quantile", 2.0, "must be >= 0 and <= 1"),
    ],
)
def test_the_new_methods_weights_and_coefficients_have_ranges(method, key, value, message):
    """TRL 1.16 accepts each of these and trains something else than asked (issue 25, item 1)."""
    from tests.helpers import MINIMAL

    raw = MINIMAL[method]()
    raw["training_args"][key] = value
    with pytest.raises(UserError, match=f"training_args.{key}: {message}"):
        load_config_dict(raw, method)
    raw["training_args"][key] = {"delta": 1.5, "cpo_alpha": 1.5, "top_k": 50}.get(key, 0.5)
    load_config_dict(raw, method)  # a value inside the range loads


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_negative_epochs_are_accepted_with_max_steps(method):
    # transformers ignores num_train_epochs once max_steps > 0; the established engine's own
    # test config uses -1 with max_steps (issue 24).
    config = MAKERS[method](training_args={"num_train_epochs": -1, "max_steps": 15})
    loaded = load_config_dict(config, method)
    assert loaded.config.training_args["num_train_epochs"] == -1
    config = MAKERS[method](training_args={"num_train_epochs": -1, "max_steps": -1})
    with pytest.raises(UserError, match=r"num_train_epochs: must be >= 0.*got -1"):
        load_config_dict(config, method)
