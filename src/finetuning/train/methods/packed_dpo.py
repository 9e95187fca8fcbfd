"""Packed DPO: each micro-batch's chosen and rejected sequences run as one row, without padding.

TRL 1.16 pads preference batches (its ``padding_free`` is disabled) and computes everything from
the per-token log-probabilities its fused LM head returns: ``model(..., labels=labels,
fused_lm_head=True).log_probs`` of shape ``[2 x batch, length - 1]`` (the head is installed by
``trl.trainer.utils.add_fused_lm_head``, which wraps the model's forward). That call is the one
place to intervene: :func:`packing_forward` wraps the fused forward of the policy and of the
reference model once more. A padded batch comes in (TRL's collator, int tensors only), its real
tokens run as one row with position ids restarting at each sequence and the boundaries that
per-example attention uses (``cu_seq_lens_q/k``, as in SFT), pre-shifted labels keep every
sequence's last token from predicting the next sequence, and the per-token results are scattered
back into the padded layout. Everything TRL computes from them (the loss for every ``loss_type``,
rewards, metrics, ``precompute_ref_log_probs``) is then unchanged and equals the padded path's.
"""

from __future__ import annotations

import functools
from typing import Any

from finetuning.data.collate import boundaries

IGNORE = -100
_MARK = "_finetuning_packed"


def pack_padded(input_ids: Any, attention_mask: Any, labels: Any) -> tuple[dict[str, Any], Any]:
    """The packed-row model inputs of a right-padded batch, and the mask of its real tokens.

    Returns:
        ``input_ids``, ``position_ids``, ``shift_labels`` (each ``[1, tokens]``) with the
        boundaries kwargs, and the ``[rows, length]`` boolean mask of real tokens.
    """
    import torch
    import torch.nn.functional as F

    valid = attention_mask.bool()
    lengths = valid.sum(1)
    # Real tokens must be a prefix of each row (TRL pads on the right); else positions are wrong.
    prefix = valid.cumsum(1) == torch.arange(1, valid.shape[1] + 1, device=valid.device)
    if not torch.equal(prefix, valid):
        raise ValueError("packed DPO needs right-padded batches")
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    # Label of the next token of the same sequence; a sequence's last token has none.
    next_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE).masked_fill(~valid, IGNORE)
    bounds = boundaries([int(n) for n in lengths.tolist()])
    bounds["cu_seq_lens_q"] = bounds["cu_seq_lens_k"] = bounds["cu_seq_lens_q"].to(valid.device)
    packed = {
        "input_ids": input_ids[valid][None],
        "position_ids": positions[valid][None],
        "shift_labels": next_labels[valid][None],
        **bounds,
    }
    return packed, valid


def unpack(outputs: Any, valid: Any) -> Any:
    """Per-token fields of a packed row's output, back in the padded ``[rows, length - 1]`` layout."""
    import torch

    def back(value: Any) -> Any:
        if not (torch.is_tensor(value) and value.dim() == 2 and value.shape[0] == 1):
            return value
        return value.new_zeros(valid.shape).masked_scatter(valid, value[0])[:, :-1]

    return type(outputs)(**{key: back(value) for key, value in outputs.items()})


def packing_forward(forward: Any) -> Any:
    """Wrap a fused-LM-head forward so padded preference batches run packed (idempotent)."""
    if getattr(forward, _MARK, False):
        return forward

    @functools.wraps(forward)
    def packed(*args: Any, **kwargs: Any) -> Any:
        mask = kwargs.get("attention_mask")
        labels = kwargs.get("labels")
        if (
            args
            or not kwargs.get("fused_lm_head")
            or mask is None
            or mask.dim() != 2
            or labels is None
            or "input_ids" not in kwargs
            or kwargs.get("shift_labels") is not None
        ):
            return forward(*args, **kwargs)  # not a preference batch: TRL's path as it is
        rest = {
            k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask", "labels")
        }
        inputs, valid = pack_padded(kwargs["input_ids"], mask, labels)
        return unpack(forward(**rest, **inputs), valid)

    setattr(packed, _MARK, True)
    return packed


def install(model: Any) -> None:
    """Wrap the forward that TRL's fused LM head installed on ``model`` (or its PEFT base)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    target.forward = packing_forward(target.forward)
