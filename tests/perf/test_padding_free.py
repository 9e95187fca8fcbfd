"""Padding-free batches give the padded batch's loss, for every attention implementation we allow."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
from finetuning.model.packing import keeps_examples_apart
from finetuning.train.loss import chunked_causal_lm_loss

ATTENTION = [
    "sdpa",
    "eager",
    pytest.param(
        "flash_attention_2",
        marks=pytest.mark.skipif(
            not (torch.cuda.is_available() and importlib.util.find_spec("flash_attn")),
            reason="flash_attention_2 needs a CUDA GPU and the flash-attn package",
        ),
    ),
]


def _examples(seed=0, lengths=(9, 4, 13)):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(3, 700, n)
        labels = ids.copy()
        labels[: n // 3] = -100  # a prompt that is not trained
        out.append({"input_ids": ids, "labels": labels})
    return out


def _model(path, attn):
    from transformers import AutoModelForCausalLM

    device = "cuda" if attn == "flash_attention_2" else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return (
        AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=dtype)
        .to(device)
        .eval()
    )


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_mistral", "tiny_qwen"])
def test_padding_free_loss_equals_padded_loss(attn, architecture, request):
    model = _model(request.getfixturevalue(architecture), attn)
    examples = _examples()
    device = model.device
    padded = {k: v.to(device) for k, v in PaddedCollator(pad_id=0, side="right")(examples).items()}
    packed = {k: v.to(device) for k, v in PaddingFreeCollator()(examples).items()}
    with torch.no_grad():
        padded_loss = model(**padded, use_cache=False).loss
        packed_loss = model(**packed, use_cache=False).loss
    tolerance = 1e-5 if model.dtype == torch.float32 else 1e-2
    torch.testing.assert_close(packed_loss, padded_loss, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_left_padding_gives_the_same_loss(attn, tiny_llama):
    model = _model(tiny_llama, attn)
    examples = _examples(seed=3)
    right = PaddedCollator(pad_id=0, side="right")(examples)
    left = PaddedCollator(pad_id=0, side="left")(examples)
    packed = PaddingFreeCollator()(examples)
    with torch.no_grad():
        losses = [model(**b, use_cache=False).loss for b in (right, left, packed)]
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses[2], losses[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_packing_check_accepts_models_that_keep_examples_apart(attn, tiny_llama):
    assert keeps_examples_apart(_model(tiny_llama, attn))


def test_the_packing_check_rejects_a_model_whose_examples_mix(tiny_llama):
    model = _model(tiny_llama, "sdpa")
    original = model.forward

    def ignores_position_resets(*args, position_ids=None, **kwargs):
        return original(*args, **kwargs)  # drops the position ids: examples attend to each other

    model.forward = ignores_position_resets
    assert not keeps_examples_apart(model)


@pytest.mark.parametrize("num_items", [None, 17])
def test_chunked_loss_equals_the_default_loss_and_gradients(num_items, tiny_llama):
    from transformers.loss.loss_utils import ForCausalLMLoss

    model = _model(tiny_llama, "sdpa")
    batch = PaddedCollator(pad_id=0, side="right")(_examples(seed=5, lengths=(30, 12, 21)))
    labels = batch.pop("labels")
    outputs = model(**batch, use_cache=False)
    logits = outputs.logits.detach().requires_grad_(True)
    reference = ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items)
    (reference_grad,) = torch.autograd.grad(reference, logits)
    logits2 = outputs.logits.detach().requires_grad_(True)
    ours = chunked_causal_lm_loss({"logits": logits2}, labels, num_items, chunk_tokens=7)
    (ours_grad,) = torch.autograd.grad(ours, logits2)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours_grad, reference_grad, atol=1e-7, rtol=1e-5)


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass while ``fn`` runs."""
    saved = []

    def pack(tensor):
        saved.append(tensor.element_size() * tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved)


def test_chunked_loss_keeps_no_full_fp32_copy_for_backward():
    from transformers.loss.loss_utils import ForCausalLMLoss

    logits = torch.randn(1, 2048, 4096, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 4096, (1, 2048))
    full_fp32 = 2048 * 4096 * 4
    default = _saved_bytes(lambda: ForCausalLMLoss(logits, labels, 4096))
    ours = _saved_bytes(
        lambda: chunked_causal_lm_loss({"logits": logits}, labels, chunk_tokens=256)
    )
    assert default >= full_fp32  # the default keeps fp32 log-probabilities of every token
    # Ours keeps only views of the bf16 logits (no new storage) and the labels.
    assert ours <= logits.numel() * logits.element_size() + 2048 * 8 * 2, ours
