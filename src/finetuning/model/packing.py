"""Whether a model keeps packed examples apart (padding-free batches need it).

A padding-free micro-batch is one row with position ids restarting at each example, the
examples' boundaries (``cu_seq_lens_q/k``) and no attention mask. The per-example attention of
:mod:`finetuning.model.attention` and flash-attention use the boundaries; eager and plain sdpa
build a block-diagonal causal mask from the position ids. The check below feeds the batch the
collator builds (the caller passes it in: the model layer does not depend on the data layer), so
it covers whichever of these the model uses. Some architectures or attention implementations
ignore position-id resets, and their examples would silently attend to each other. This is checked on the real model with two short random
sequences, packed against separate, before training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def keeps_examples_apart(model: Any, collate: Callable[[list[dict]], dict]) -> bool:
    """True when packed logits equal the logits of each example run alone.

    Args:
        model: The model to check.
        collate: The padding-free collator the run uses (examples -> one packed batch).
    """
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(3, vocab, (5,), generator=generator)
    second = torch.randint(3, vocab, (7,), generator=generator)
    device = model.get_input_embeddings().weight.device
    packed = collate([{"input_ids": x.numpy(), "labels": x.numpy()} for x in (first, second)])
    packed.pop("labels")
    packed = {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [
                model(input_ids=x[None].to(device), use_cache=False).logits[0]
                for x in (first, second)
            ]
            logits = model(**packed, use_cache=False).logits[0]
    finally:
        model.train(was_training)
    reference = torch.cat(alone).float()
    scale = reference.abs().max().clamp(min=1.0)
    tolerance = 1e-4 if reference.dtype == torch.float32 and logits.dtype == torch.float32 else 3e-2
    return bool(((logits.float() - reference).abs().max() / scale) < tolerance)
