"""A memory-lean causal-LM loss: cross-entropy in fp32 chunks, recomputed in the backward pass.

transformers' default loss upcasts the whole ``[tokens, vocabulary]`` logits tensor to fp32 and
keeps fp32 softmax intermediates for the backward pass: for 16k tokens and a 128k vocabulary that
is over 8 GB beyond the logits themselves. Here each chunk of tokens is upcast, reduced to a sum
and checkpointed, so at most one chunk's fp32 intermediates exist at a time. The result equals the
default loss (same shift, ignore index and ``num_items_in_batch`` normalisation).

The LM head need not run where no label is trained (prompts, the last token of each example):
the collator can pass a boolean ``logits_to_keep`` (:func:`finetuning.data.collate.trained_positions`)
and the model then returns only those positions' logits, which this loss accepts.

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

    Each chunk is checkpointed (its fp32 intermediates recomputed in the backward pass) only when
    there are several chunks: with one, its intermediates exist once either way, and the
    recomputation would only cost time.

    Args:
        outputs: Model outputs with ``logits`` of shape ``[batch, length, vocab]``, or
            ``[kept, vocab]`` when the model was given the collator's boolean ``logits_to_keep``
            (the positions whose next label is trained, in row-major order).
        labels: ``[batch, length]`` with -100 where not trained (unshifted).
        num_items_in_batch: Trained tokens over the whole accumulated batch; the sum is divided by
            it (as transformers does), else by this batch's trained tokens.
        chunk_tokens: Tokens per chunk.

    Raises:
        ValueError: Kept logits that do not match the trained labels in number.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    vocab = logits.shape[-1]
    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:].reshape(-1).to(logits.device)
    trained = (shifted != IGNORE).sum()
    if logits.dim() == 2:  # only the trained positions' logits (logits_to_keep)
        shifted = shifted[shifted != IGNORE]
        if shifted.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{logits.shape[0]} kept logits for {shifted.shape[0]} trained labels: "
                "logits_to_keep must mark the positions whose next label is trained"
            )
    flat = logits.reshape(-1, vocab)
    starts = [
        start
        for start in range(0, flat.shape[0], chunk_tokens)
        if (shifted[start : start + chunk_tokens] != IGNORE).any()
    ]
    recompute = torch.is_grad_enabled() and flat.requires_grad and len(starts) > 1
    total = flat.new_zeros((), dtype=torch.float32)
    for start in starts:
        end = start + chunk_tokens
        part, part_labels = flat[start:end], shifted[start:end]
        if recompute:
            total = total + checkpoint(_chunk_loss_sum, part, part_labels, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(part, part_labels)
    denominator = trained if num_items_in_batch is None else num_items_in_batch
    if torch.is_tensor(denominator):
        denominator = denominator.to(total.device)
    return total / denominator


def keeps_trained_logits(model: Any) -> bool:
    """Whether ``model`` honours a boolean ``[batch, length]`` ``logits_to_keep``.

    transformers 5 models take it and return only those positions' logits, flattened to
    ``[kept, vocab]``; some older model code slices with an int only. Checked on the real model
    (a PEFT model too) with one short sequence: the kept logits must equal the full logits at the
    kept positions.
    """
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    device = model.get_input_embeddings().weight.device
    ids = torch.randint(3, vocab, (1, 6), generator=torch.Generator().manual_seed(0)).to(device)
    keep = torch.tensor([[False, True, True, False, True, False]], device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits
            kept = model(input_ids=ids, logits_to_keep=keep, use_cache=False).logits
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    finally:
        model.train(was_training)
    if kept.shape != (3, full.shape[-1]):
        return False
    reference = full[keep].float()
    scale = reference.abs().max().clamp(min=1.0)
    tolerance = 1e-4 if full.dtype == torch.float32 else 3e-2
    return bool(((kept.float() - reference).abs().max() / scale) < tolerance)
