"""Combining datasets as index lists: concatenation, the weighted mix and the auto split."""

from __future__ import annotations

import math

import numpy as np

from finetuning.errors import UserError


def concatenate(lengths: list[int]) -> np.ndarray:
    """Indices into the concatenated datasets, in order: all of d0, then d1, ..."""
    return np.arange(sum(lengths), dtype=np.int64)


def weighted_mix(lengths: list[int], weights: list[float], seed: int) -> np.ndarray:
    """The precomputed weighted mix, as indices into the concatenated datasets.

    Datasets with weight 0 are left out. With all remaining weights equal to 1.0: a
    deterministic round robin ``d0[0], d1[0], ..., d0[1], d1[1], ...`` for ``max_len`` rounds,
    shorter datasets wrapping around. Otherwise a ``numpy`` PCG64 generator seeded with ``seed``
    draws the source of each next row with probabilities proportional to the weights; each
    source yields its rows in order and wraps around; the mix stops once every source has been
    used up at least once.

    Raises:
        UserError: A negative weight or no positive weight.
    """
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"sampling weights must be >= 0 with a positive sum, got {weights}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    active = [i for i, w in enumerate(weights) if w > 0]
    if all(weights[i] == 1.0 for i in active):
        rounds = max(lengths[i] for i in active)
        r = np.arange(rounds, dtype=np.int64)
        columns = [starts[i] + r % lengths[i] for i in active]
        return np.stack(columns, axis=1).reshape(-1)
    probs = np.array([weights[i] for i in active], dtype=np.float64)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    taken = np.zeros(len(active), dtype=np.int64)
    draws: list[np.ndarray] = []
    need = np.array([lengths[i] for i in active], dtype=np.int64)
    chunk = 4096
    while True:
        batch = rng.choice(len(active), size=chunk, p=probs)
        counts = np.zeros((chunk, len(active)), dtype=np.int64)
        counts[np.arange(chunk), batch] = 1
        cumulative = taken + np.cumsum(counts, axis=0)
        done = np.all(cumulative >= need, axis=1)
        if done.any():
            stop = int(np.argmax(done)) + 1
            draws.append(batch[:stop])
            break
        draws.append(batch)
        taken = cumulative[-1]
    choice = np.concatenate(draws)
    out = np.empty(len(choice), dtype=np.int64)
    for k, i in enumerate(active):
        positions = np.nonzero(choice == k)[0]
        out[positions] = starts[i] + np.arange(len(positions)) % lengths[i]
    return out


def auto_split(n: int, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``n`` rows into (train, validation) positions.

    ``n_valid = ceil(ratio * n)``; a PCG64 generator seeded with ``seed`` permutes the rows and
    the first ``n_valid`` become validation.

    Raises:
        UserError: The ratio is outside (0, 1) or leaves no training row.
    """
    if not 0 < ratio < 1:
        raise UserError(f"data_conf.validation_data.ratio must lie in (0, 1), got {ratio}")
    n_valid = math.ceil(ratio * n)
    if n - n_valid < 1:
        raise UserError(
            f"data_conf.validation_data.ratio: {ratio} of {n} rows leaves no training row "
            "(lower the ratio or add data)"
        )
    order = np.random.default_rng(seed).permutation(n)
    return order[n_valid:], order[:n_valid]
