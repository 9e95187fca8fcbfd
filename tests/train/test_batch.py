"""The batch-size formula (BEHAVIOR.md §7 table) and the learning-rate scalings."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finetuning.config.loading import load_config_dict
from finetuning.errors import UserError
from finetuning.train.batch import resolve, resolve_batch, scaled_learning_rate
from tests.helpers import minimal_sft

TABLE = {
    (8, 4, 1): (4, 2), (8, 4, 2): (4, 1), (8, 4, 4): (2, 1), (8, 4, 8): (1, 1), (8, 8, 1): (8, 1),
    (8, 10, 8): (1, 1), (8, 10, 2): (4, 1), (8, 10, 1): (8, 1), (8, 3, 2): (2, 2),
    (512, 4, 1): (4, 128),
}  # fmt: skip


@pytest.mark.parametrize(("case", "expected"), TABLE.items(), ids=str)
def test_batch_table(case, expected):
    assert resolve_batch(*case) == expected


@pytest.mark.parametrize("case", [(8, 4, 10), (8, 10, 10), (1, 10, 2), (8, 0, 1)], ids=str)
def test_batch_errors(case):
    with pytest.raises(UserError):
        resolve_batch(*case)


@pytest.mark.parametrize(
    ("scaling", "factor"), [("none", 1.0), ("sqrt", math.sqrt(64)), ("linear", 64.0)]
)
def test_learning_rate_scalings(scaling, factor):
    assert scaled_learning_rate(1e-5, 2.0, scaling, 64) == pytest.approx(1e-5 * 2.0 * factor)


def test_resolve_uses_the_default_learning_rate_and_eval_batch():
    raw = minimal_sft(
        batchsize_conf={"total_train_batch_size": 16, "max_per_device_train_batch_size": 4},
        overrides={"lr_multiplier": 0.5, "lr_batch_size_scaling": "sqrt"},
        training_args={},
    )
    resolved = resolve(load_config_dict(raw, "sft").config, world_size=2)
    assert (resolved.per_device_train, resolved.accumulation, resolved.per_device_eval) == (4, 2, 4)
    assert resolved.learning_rate == pytest.approx(5e-5 * 0.5 * 4)
    raw["batchsize_conf"]["per_device_eval_batch_size"] = 7
    assert resolve(load_config_dict(raw, "sft").config, 1).per_device_eval == 7


def _counting_up(total, max_per_device, world_size):
    """The original definition: the smallest accumulation that fits (slow for big totals)."""
    for accumulation in range(1, total // world_size + 1):
        if total % (world_size * accumulation) == 0:
            per_device = total // (world_size * accumulation)
            if per_device <= max_per_device:
                return per_device, accumulation
    raise AssertionError("unreachable")


@settings(max_examples=300, deadline=None)
@given(
    per_process=st.integers(1, 5000),
    max_per_device=st.integers(1, 300),
    world_size=st.sampled_from([1, 2, 3, 8]),
)
def test_batch_matches_the_definition(per_process, max_per_device, world_size):
    total = per_process * world_size
    expected = _counting_up(total, max_per_device, world_size)
    assert resolve_batch(total, max_per_device, world_size) == expected


def test_a_huge_total_batch_resolves_at_once():
    # In a subprocess, so that the old arithmetic (counting accumulation up from 1, minutes
    # here) fails on the timeout instead of hanging the suite.
    code = (
        "from finetuning.train.batch import resolve_batch\n"
        "print(resolve_batch(10**10, 8, 1), resolve_batch(2 * 9_999_999_967, 4, 2))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    # 9_999_999_967 is prime: one sequence per device, accumulated over all of it.
    assert result.stdout.split("\n")[0] == "(8, 1250000000) (1, 9999999967)"


def test_an_unrealistic_total_batch_is_a_config_error():
    config = minimal_sft(
        batchsize_conf={"total_train_batch_size": 10**10, "max_per_device_train_batch_size": 2}
    )
    with pytest.raises(UserError, match=r"batchsize_conf\.total_train_batch_size: .*1048576"):
        load_config_dict(config, "sft")
