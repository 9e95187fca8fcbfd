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


# Per-source views and token-share mixing (docs/evaluating.md).


def source_of(indices: np.ndarray, lengths: list[int]) -> np.ndarray:
    """For each index into the concatenated datasets, the position of the dataset it is in."""
    bounds = np.cumsum(lengths)
    return np.searchsorted(bounds, np.asarray(indices, dtype=np.int64), side="right")


def by_source(
    indices: np.ndarray,
    lengths: list[int],
    labels: list[str],
    first: int = 0,
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``indices`` grouped by source, in order: label -> the indices that fall in that source.

    Args:
        indices: Indices into the concatenated datasets.
        lengths: Rows of each source, the sources starting at ``first``.
        labels: One label per source.
        first: Where the first of these sources starts in the concatenation.
        rows: The row of each index, where ``indices`` are examples (a conversation trained
            turn by turn has several); default: the indices are rows.
    """
    at = np.asarray(indices if rows is None else rows, dtype=np.int64)
    which = source_of(at - first, lengths)
    return {label: indices[which == k] for k, label in enumerate(labels)}


def token_share_weights(weights: list[float], rows: list[int], tokens: list[int]) -> list[float]:
    """Row-draw probabilities that make ``weights`` shares of tokens (``weight_by: tokens``).

    A draw from source ``i`` brings ``tokens[i] / rows[i]`` tokens on average (``tokens``
    counts only the rows that train), so drawing it with probability proportional to
    ``weights[i] * rows[i] / tokens[i]`` makes its expected share of the tokens ``weights[i]``
    over their sum.

    Raises:
        UserError: A weighted source with no usable tokens.
    """
    out = []
    for i, (w, n, t) in enumerate(zip(weights, rows, tokens, strict=True)):
        if w > 0 and t <= 0:
            raise UserError(
                f"data_conf.training_data.datasets[{i}] has no usable tokens but weight {w} "
                "(weight_by: tokens): give it weight 0 or usable rows"
            )
        out.append(w * n / t if w > 0 else 0.0)
    total = sum(out)
    return [w / total for w in out]


def token_draw(
    weights: list[float], rows: list[int], lengths: np.ndarray, usable: np.ndarray
) -> list[float]:
    """``weight_by: tokens``: the row-draw weights that give each source its token share.

    Args:
        weights: ``sampling_weight`` of each source.
        rows: Rows of each source (the concatenation's layout).
        lengths: Token length of every row of the concatenation.
        usable: Which rows train (the others are dropped after mixing and bring no tokens).
    """
    n = sum(rows)
    counted = np.where(usable[:n], lengths[:n], 0)
    which = source_of(np.arange(n), rows)
    tokens = [int(counted[which == k].sum()) for k in range(len(rows))]
    return token_share_weights(weights, rows, tokens)


def mixture_table(
    labels: list[str],
    weights: list[float],
    weight_by: str,
    rows: list[int],
    lengths_of: np.ndarray,
    mixed: np.ndarray,
) -> list[dict[str, object]]:
    """Per source: rows and tokens requested and realized in the training mix, and the share.

    Args:
        labels: One per source.
        weights: ``sampling_weight`` of each source.
        weight_by: ``rows`` or ``tokens``: what the weights are shares of.
        rows: Rows of each source (the concatenation's layout).
        lengths_of: Trained tokens of every row of the concatenation.
        mixed: The training rows after mixing and length handling.
    """
    which = source_of(mixed, rows)
    tokens = lengths_of[mixed]
    total_rows, total_tokens = len(mixed), int(tokens.sum())
    share = np.asarray(weights, dtype=np.float64) / sum(weights)
    out = []
    for k, label in enumerate(labels):
        realized_rows = int((which == k).sum())
        realized_tokens = int(tokens[which == k].sum())
        mean = realized_tokens / realized_rows if realized_rows else 0.0
        if weight_by == "tokens":
            tokens_req = float(share[k] * total_tokens)
            rows_req = tokens_req / mean if mean else 0.0
        else:
            rows_req = float(share[k] * total_rows)
            tokens_req = rows_req * mean
        realized = realized_tokens if weight_by == "tokens" else realized_rows
        out.append(
            {
                "source": label,
                "weight": weights[k],
                "rows_available": rows[k],
                "rows_requested": round(rows_req, 1),
                "rows_realized": realized_rows,
                "repeated_rows": max(0, realized_rows - rows[k]),
                "tokens_requested": round(tokens_req, 1),
                "tokens_realized": realized_tokens,
                "share_requested": round(float(share[k]), 4),
                "share_realized": round(
                    realized / (total_tokens if weight_by == "tokens" else total_rows or 1), 4
                ),
            }
        )
    return out


def format_mixture(table: list[dict[str, object]], weight_by: str) -> list[str]:
    """The mixture table as preflight lines."""
    head = (
        f"mixture (weight_by: {weight_by}; share of {weight_by}): source, weight, rows "
        "requested/realized (repeated), tokens requested/realized, share requested/realized"
    )
    out = [head]
    for r in table:
        out.append(
            f"  {r['source']}: weight {r['weight']:g}, rows {r['rows_requested']:.0f}/"
            f"{r['rows_realized']} ({r['repeated_rows']} repeated), tokens "
            f"{r['tokens_requested']:.0f}/{r['tokens_realized']}, share "
            f"{r['share_requested']:.1%}/{r['share_realized']:.1%}"
        )
    return out
