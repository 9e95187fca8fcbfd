"""Concatenation, the weighted mix and the auto split on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finetuning.data.sources import auto_split, concatenate, weighted_mix
from finetuning.errors import UserError


def test_concatenation_in_order():
    assert concatenate([2, 3]).tolist() == [0, 1, 2, 3, 4]


def test_round_robin_with_wraparound():
    # d0 = [0, 1, 2], d1 = [3] (offset 3), d2 = [4, 5] (offset 4); 3 rounds of 3.
    assert weighted_mix([3, 1, 2], [1.0, 1.0, 1.0], seed=0).tolist() == [0, 3, 4, 1, 3, 5, 2, 3, 4]


def test_round_robin_skips_zero_weights():
    assert weighted_mix([2, 5, 1], [1.0, 0.0, 1.0], seed=0).tolist() == [0, 7, 1, 7]


def test_weighted_draws_follow_the_seeded_generator():
    lengths, weights, seed = [3, 2], [3.0, 1.0], 7
    mix = weighted_mix(lengths, weights, seed)
    # Recompute by hand: draw sources one at a time until both were used up at least once.
    rng = np.random.default_rng(seed)
    draws = rng.choice(2, size=4096, p=[0.75, 0.25])
    taken, expected = [0, 0], []
    for source in draws:
        expected.append([0, 3][source] + taken[source] % lengths[source])
        taken[source] += 1
        if taken[0] >= 3 and taken[1] >= 2:
            break
    assert mix.tolist() == expected


def test_weighted_mix_uses_every_row_and_is_deterministic():
    mix = weighted_mix([50, 10], [0.5, 2.0], seed=1)
    assert set(mix.tolist()) == set(range(60))
    assert np.array_equal(mix, weighted_mix([50, 10], [0.5, 2.0], seed=1))
    assert not np.array_equal(mix, weighted_mix([50, 10], [0.5, 2.0], seed=2))


def test_weighted_mix_size_is_about_max_len_over_p():
    mix = weighted_mix([100, 1000], [0.1, 0.9], seed=3)
    expected = max(100 / 0.1, 1000 / 0.9)
    assert 0.7 * expected < len(mix) < 1.6 * expected


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -0.5]])
def test_bad_weights(weights):
    with pytest.raises(UserError):
        weighted_mix([1, 1], weights, 0)


def test_auto_split_hand_computed():
    train, valid = auto_split(10, 0.25, seed=5)
    order = np.random.default_rng(5).permutation(10)
    n_valid = math.ceil(0.25 * 10)
    assert valid.tolist() == order[:n_valid].tolist()
    assert train.tolist() == order[n_valid:].tolist()
    assert len(valid) == 3


@pytest.mark.parametrize(("n", "ratio"), [(1, 0.5), (2, 0.9), (5, 1.0), (5, 0.0)])
def test_auto_split_errors(n, ratio):
    with pytest.raises(UserError):
        auto_split(n, ratio, 0)
