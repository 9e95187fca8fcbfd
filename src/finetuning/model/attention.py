"""Per-example attention for padding-free batches, registered through transformers' interfaces.

A padding-free micro-batch is one row holding several examples, position ids restarting at each.
With ``sdpa`` transformers turns that into a dense ``S x S`` block-diagonal mask, so attention
work and mask memory grow with the square of the whole row. The attention functions here are
registered under their own names in ``AttentionInterface`` (and ``AttentionMaskInterface``, whose
mask function builds no mask for a row without padding), and attend each example on its own:

- ``finetuning_varlen``: CUDA with bf16/fp16 and ``torch.nn.attention.varlen.varlen_attn``
  (PyTorch's own FlashAttention varlen kernel; no flash-attn package needed);
- ``finetuning_per_example``: anywhere else, causal ``sdpa`` on each example's slice, so the cost
  is the sum of the examples' squares.

The examples' boundaries come from ``cu_seq_lens_q`` / ``max_length_q`` (the names of
transformers' flash-attention kwargs, which the models pass through to the attention function), or
are derived from ``position_ids`` when a caller passes only those. A padded batch (a 2-D attention
mask) or a KV cache gets the ordinary dense ``sdpa`` mask and kernel, so evaluation, generation and
the padded fallback keep transformers' behaviour. Sliding-window layers (Mistral, Qwen2) keep
their window inside each example.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

VARLEN = "finetuning_varlen"
PER_EXAMPLE = "finetuning_per_example"

# The kernels that actually ran in this process (for the run log and summary).
_ran: set[str] = set()


def kernels_ran() -> list[str]:
    """The attention kernels that ran since :func:`reset_kernels_ran` (sorted)."""
    return sorted(_ran)


def reset_kernels_ran() -> None:
    _ran.clear()


def _boundaries(cu_seq_lens: Any, position_ids: Any, length: int) -> list[int]:
    """Start offsets of the examples of one row plus its end, as Python ints."""
    import torch

    if cu_seq_lens is not None:
        return [int(x) for x in cu_seq_lens.tolist()]
    if position_ids is None:
        return [0, length]
    starts = torch.nonzero(position_ids[0] == 0).flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return [*starts, length]


def _window_mask(length: int, window: int, device: Any) -> Any:
    """The causal sliding-window mask of one example: key j is seen from query i when i-window < j <= i."""
    import torch

    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    return (j <= i) & (j > i - window)


@functools.lru_cache(maxsize=16)
def _runs(bounds: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The row as runs of consecutive equal-length examples: ``(count, length)`` pairs.

    A run is attended in one batched sdpa call (its examples are views of the row, reshaped to a
    batch, no copy), so a micro-batch of fixed-length examples costs one call per layer.
    Empty examples are dropped (they have no tokens to attend).
    """
    runs: list[list[int]] = []
    for a, b in itertools.pairwise(bounds):
        if b <= a:
            continue
        if runs and runs[-1][1] == b - a:
            runs[-1][0] += 1
        else:
            runs.append([1, b - a])
    return tuple((count, length) for count, length in runs)


def _sdpa_run(
    query: Any, key: Any, value: Any, count: int, scaling: Any, dropout: float, window: Any
) -> Any:
    """Causal sdpa of ``count`` consecutive examples of equal length, ``[1, heads, count*L, dim]``.

    Returns:
        The output as ``[1, count*L, heads, dim]`` (the layout the model expects back).
    """
    import torch.nn.functional as F

    heads, total, dim = query.shape[1], query.shape[2], query.shape[3]
    length = total // count

    def batch(x: Any) -> Any:  # [1, h, count*L, d] -> [count, h, L, d]: a view, no copy
        return x[0].unflatten(1, (count, length)).transpose(0, 1)

    q, k, v = (batch(x) for x in (query, key, value)) if count > 1 else (query, key, value)
    gqa = query.shape[1] != key.shape[1]  # sdpa shares key/value heads itself (no copies)
    if window is not None and length > window:
        mask = _window_mask(length, window, query.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=gqa
        )
    else:
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=length > 1, dropout_p=dropout, scale=scaling, enable_gqa=gqa
        )
    return out.transpose(1, 2).reshape(1, total, heads, dim)


def _per_example(
    query: Any, key: Any, value: Any, bounds: list[int], scaling: Any, dropout: float, window: Any
) -> Any:
    """Attention of each example of a one-row batch, as ``[1, len, heads, dim]``.

    The row is cut with one ``split`` per tensor (its backward is one ``cat``; slicing each
    example out would give every example a full-row zero gradient in the backward pass).
    """
    import torch

    start, end = bounds[0], bounds[-1]
    if start or end != query.shape[2]:
        query, key, value = (x[:, :, start:end] for x in (query, key, value))
    runs = _runs(tuple(bounds))
    sizes = [count * length for count, length in runs]
    parts = zip(
        *(x.split(sizes, dim=2) if len(sizes) > 1 else (x,) for x in (query, key, value)),
        strict=True,
    )
    pieces = [
        _sdpa_run(q, k, v, count, scaling, dropout, window)
        for (q, k, v), (count, _) in zip(parts, runs, strict=True)
    ]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)


def _dense_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _ran.add("sdpa (dense mask)")
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _needs_dense(attention_mask: Any, kwargs: dict[str, Any]) -> bool:
    # A 4-D mask (padded batch) or a KV cache: transformers' own path is right and cheap enough.
    return attention_mask is not None or kwargs.get("cache") is not None


def per_example_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal sdpa per example (``AttentionInterface`` signature; inputs ``[batch, heads, len, dim]``).

    Returns:
        The attention output ``[batch, len, heads, dim]`` and no weights.
    """
    import torch

    if _needs_dense(attention_mask, kwargs) or query.shape[2] != key.shape[2]:
        return _dense_sdpa(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    _ran.add("per-example sdpa")
    dropout = dropout if module.training else 0.0
    position_ids = kwargs.get("position_ids")
    rows = []
    for row in range(query.shape[0]):
        bounds = _boundaries(
            kwargs.get("cu_seq_lens_q") if query.shape[0] == 1 else None,
            None
            if position_ids is None
            else position_ids[min(row, position_ids.shape[0] - 1)][None],
            query.shape[2],
        )
        q, k, v = (x[row : row + 1] if query.shape[0] > 1 else x for x in (query, key, value))
        rows.append(_per_example(q, k, v, bounds, scaling, dropout, sliding_window))
    return (rows[0] if len(rows) == 1 else torch.cat(rows)), None


def varlen_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """PyTorch's varlen FlashAttention over the examples of a one-row batch (CUDA, bf16/fp16).

    Falls back to :func:`per_example_attention` where the kernel does not apply (several rows,
    fp32, CPU tensors, attention dropout) and to dense sdpa for padded batches or a KV cache.
    """
    import torch

    if _needs_dense(attention_mask, kwargs) or query.shape[2] != key.shape[2]:
        return _dense_sdpa(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    usable = (
        query.shape[0] == 1
        and query.is_cuda
        and query.dtype in (torch.float16, torch.bfloat16)
        and not (module.training and dropout)
    )
    if not usable:
        return per_example_attention(
            module, query, key, value, None, dropout, scaling, sliding_window, **kwargs
        )
    from torch.nn.attention.varlen import varlen_attn

    cu = kwargs.get("cu_seq_lens_q")
    longest = kwargs.get("max_length_q")
    if cu is None:
        bounds = _boundaries(None, kwargs.get("position_ids"), query.shape[2])
        cu = torch.tensor(bounds, dtype=torch.int32, device=query.device)
        longest = max(b - a for a, b in itertools.pairwise(bounds))
    cu = cu.to(device=query.device, dtype=torch.int32)
    longest = int(longest)
    # transformers' window W sees W keys (i-W < j <= i); flash's (left, 0) sees left + 1 of them.
    window = (sliding_window - 1, 0) if sliding_window is not None else (-1, 0)
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # [tokens, heads, dim]
    gqa = {}
    if query.shape[1] != key.shape[1]:
        if _takes_enable_gqa(varlen_attn):
            gqa = {"enable_gqa": True}
        else:  # torch 2.11's varlen_attn has no enable_gqa: give every query head its key/value
            groups = query.shape[1] // key.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    _ran.add("varlen_attn (CUDA)")
    out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=window, **gqa)
    return out[None], None


@functools.lru_cache(maxsize=1)
def _takes_enable_gqa(function: Any) -> bool:
    """Whether this torch's ``varlen_attn`` shares key/value heads itself (2.13 does, 2.11 does not)."""
    import inspect

    return "enable_gqa" in inspect.signature(function).parameters


def no_mask_when_unpadded(*args: Any, **kwargs: Any) -> Any:
    """``AttentionMaskInterface`` function: no mask for a row without padding and cache, else sdpa's.

    Without padding the attention functions above keep examples apart themselves, so the dense
    block-diagonal mask transformers would build from the position ids is never materialised.
    """
    from transformers.masking_utils import sdpa_mask

    no_padding = kwargs.get("attention_mask") is None
    no_cache = not kwargs.get("q_offset") and not kwargs.get("kv_offset")
    if no_padding and no_cache and kwargs.get("q_length") == kwargs.get("kv_length"):
        return None
    return sdpa_mask(*args, **kwargs)


def register() -> None:
    """Register both attention functions and their mask function with transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(PER_EXAMPLE, per_example_attention)
    AttentionInterface.register(VARLEN, varlen_attention)
    AttentionMaskInterface.register(PER_EXAMPLE, no_mask_when_unpadded)
    AttentionMaskInterface.register(VARLEN, no_mask_when_unpadded)


def varlen_available() -> bool:
    """Whether torch's varlen FlashAttention can run here (a CUDA GPU, Ampere or newer).

    The dtype is checked on each call (bf16/fp16, also under autocast), since the model is
    usually still on the CPU, in fp32, when the implementation is chosen.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.get_device_capability()[0] >= 8


def choose(model: Any, requested: str | None) -> str:
    """Switch ``model`` to per-example attention when the user left ``sdpa`` (or nothing) asked.

    Args:
        model: The model to train (a PEFT model is handled through its base model).
        requested: ``run_conf.model_args.attn_implementation`` as configured.

    Returns:
        The attention implementation the model now uses.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    current = base.config._attn_implementation
    if requested not in (None, "sdpa") or current != "sdpa":
        return current  # eager, flash_attention_2/3, flex...: what the user asked for
    register()
    reset_kernels_ran()
    name = VARLEN if varlen_available() else PER_EXAMPLE
    base.set_attn_implementation(name)
    return name


def restore_sdpa(model: Any) -> None:
    """Undo :func:`choose` (for the padded fallback), if it switched the model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.config._attn_implementation in (VARLEN, PER_EXAMPLE):
        base.set_attn_implementation("sdpa")


def describe(name: str) -> str:
    """A line for the run log about the attention kernel of padding-free batches."""
    return {
        VARLEN: "attention: torch varlen_attn per example (CUDA FlashAttention, no dense mask)",
        PER_EXAMPLE: "attention: causal sdpa per example (no dense mask; cost = sum of squares)",
    }.get(name, f"attention: {name} (transformers' implementation)")
