"""A memory-lean causal-LM loss: cross-entropy in fp32 chunks, recomputed in the backward pass.

transformers' default loss upcasts the whole ``[tokens, vocabulary]`` logits tensor to fp32 and
keeps fp32 softmax intermediates for the backward pass: for 16k tokens and a 128k vocabulary that
is over 8 GB beyond the logits themselves. Here each chunk of tokens is upcast, reduced to a sum
and checkpointed, so at most one chunk's fp32 intermediates exist at a time. The result equals the
default loss (same shift, ignore index and ``num_items_in_batch`` normalisation).

On a GPU, ``training_args.use_liger_kernel: true`` goes further (a fused linear + cross-entropy
kernel that never materialises the logits); the engine then leaves the loss to it.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100
CHUNK_TOKENS = 4096


def _chunk_loss_sum(logits: Any, labels: Any) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum")


def chunked_causal_lm_loss(
    outputs: Any, labels: Any, num_items_in_batch: Any = None, chunk_tokens: int = CHUNK_TOKENS
) -> Any:
    """The causal-LM loss of ``outputs.logits`` against ``labels``, in fp32 chunks.

    Args:
        outputs: Model outputs with ``logits`` of shape ``[batch, length, vocab]``.
        labels: ``[batch, length]`` with -100 where not trained (unshifted).
        num_items_in_batch: Trained tokens over the whole accumulated batch; the sum is divided by
            it (as transformers does), else by this batch's trained tokens.
        chunk_tokens: Tokens per chunk.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    vocab = logits.shape[-1]
    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1).to(logits.device)
    flat = logits.reshape(-1, vocab)
    total = flat.new_zeros((), dtype=torch.float32)
    for start in range(0, flat.shape[0], chunk_tokens):
        part_labels = shifted[start : start + chunk_tokens]
        if not (part_labels != IGNORE).any():
            continue
        part = flat[start : start + chunk_tokens]
        if torch.is_grad_enabled() and part.requires_grad:
            total = total + checkpoint(_chunk_loss_sum, part, part_labels, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(part, part_labels)
    denominator = (shifted != IGNORE).sum() if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(denominator):
        denominator = denominator.to(total.device)
    return total / denominator
