"""Whether a model keeps packed examples apart (padding-free batches need it).

A padding-free micro-batch is one row with position ids restarting at each example and no
attention mask; transformers then builds a block-diagonal causal mask from the position ids.
Some architectures or attention implementations ignore position-id resets, and their examples
would silently attend to each other. This is checked on the real model with two short random
sequences, packed against separate, before training.
"""

from __future__ import annotations

from typing import Any


def keeps_examples_apart(model: Any) -> bool:
    """True when packed logits equal the logits of each example run alone."""
    import torch

    vocab = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(3, vocab, (5,), generator=generator)
    second = torch.randint(3, vocab, (7,), generator=generator)
    device = model.get_input_embeddings().weight.device
    packed_ids = torch.cat([first, second])[None].to(device)
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None].to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [
                model(input_ids=x[None].to(device), use_cache=False).logits[0]
                for x in (first, second)
            ]
            packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False).logits[0]
    finally:
        model.train(was_training)
    reference = torch.cat(alone).float()
    scale = reference.abs().max().clamp(min=1.0)
    tolerance = 1e-4 if reference.dtype == torch.float32 and packed.dtype == torch.float32 else 3e-2
    return bool(((packed.float() - reference).abs().max() / scale) < tolerance)
