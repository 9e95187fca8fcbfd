"""GRPO's batch arithmetic (prompts x generations) and its checks before the model loads."""

from __future__ import annotations

import pytest

from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from finetuning.train.batch import resolve
from finetuning.train.methods.grpo_plan import generation_batch, lines
from finetuning.train.methods.hooks import MethodChecks
from tests.helpers import minimal_grpo


def _config(total=4, max_per_device=4, **training_args):
    raw = minimal_grpo(
        batchsize_conf={
            "total_train_batch_size": total,
            "max_per_device_train_batch_size": max_per_device,
        }
    )
    raw["training_args"].update(training_args)
    return load_config_dict(raw, "grpo").config


def test_total_counts_prompts_and_the_device_batch_counts_completions():
    config = _config(total=4, max_per_device=4, num_generations=4)  # 16 completions a step
    resolved = resolve(config, world_size=2)
    assert (resolved.per_device_train, resolved.accumulation) == (4, 2)
    assert generation_batch(config, resolved) == (16, 2)  # one generation per optimizer step
    text = "\n".join(lines(config, resolved, MethodChecks()))
    assert "4 prompts x 4 generations = 16 completions per step" in text


def test_the_default_is_trls_eight_generations():
    raw = minimal_grpo()
    del raw["training_args"]["num_generations"]
    resolved = resolve(load_config_dict(raw, "grpo").config, world_size=1)
    assert resolved.per_device_train * resolved.accumulation == 2 * 8


@pytest.mark.parametrize(
    ("config", "world", "message"),
    [
        (dict(total=3, num_generations=3), 2, "9 completions per step is not divisible by the 2"),
        (dict(generation_batch_size=8, steps_per_generation=2), 1, "not both"),
        (dict(num_generations=2, generation_batch_size=6), 1, "multiple of the completions"),
        (
            dict(max_per_device=1, num_generations=4, generation_batch_size=6),
            1,
            "whole prompt groups",
        ),
        (
            dict(max_per_device=1, num_generations=4, steps_per_generation=3),
            1,
            "whole prompt groups",
        ),
        (dict(auto_find_batch_size=True), 1, "auto_find_batch_size"),
    ],
)
def test_generation_arithmetic_errors_name_the_fields(config, world, message):
    config = dict(config)
    cfg = _config(
        total=config.pop("total", 4), max_per_device=config.pop("max_per_device", 4), **config
    )
    with pytest.raises(UserError, match=message):
        generation_batch(cfg, resolve(cfg, world_size=world))


def test_reward_weights_belong_to_the_rewards():
    raw = minimal_grpo()
    raw["training_args"]["reward_weights"] = [1.0]
    with pytest.raises(UserError, match=r"grpo_args.rewards\[\].weight"):
        load_config_dict(raw, "grpo")


def test_vllm_generation_is_refused_where_vllm_or_cuda_is_missing():
    import importlib.util

    import torch

    from finetuning.train.methods.grpo_plan import uses_vllm, vllm_problems

    raw = minimal_grpo()
    assert vllm_problems(load_config_dict(raw, "grpo").config) == []  # not asked for
    raw["grpo_args"]["use_vllm"] = True
    config = load_config_dict(raw, "grpo").config
    assert uses_vllm(config)
    problems = vllm_problems(config)
    expected = [importlib.util.find_spec("vllm") is None, not torch.cuda.is_available()]
    assert len(problems) == sum(expected)
    if expected[0]:
        assert "the vllm package is not installed" in problems[0]


def test_grpo_has_its_own_ranges():
    raw = minimal_grpo()
    raw["training_args"]["beta"] = 0.0  # TRL's default for GRPO: no reference model
    assert load_config_dict(raw, "grpo").config.training_args["beta"] == 0.0
    raw["training_args"]["num_generations"] = 1
    with pytest.raises(UserError, match="num_generations: must be >= 2"):
        load_config_dict(raw, "grpo")
