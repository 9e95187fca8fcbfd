"""Padding-free batches give the padded batch's loss, for every attention implementation we allow."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
from finetuning.model import attention
from finetuning.model.packing import keeps_examples_apart
from finetuning.train.loss import chunked_causal_lm_loss

attention.register()

ATTENTION = [
    "sdpa",
    "eager",
    attention.PER_EXAMPLE,
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


def _model(path, attn, **config):
    from transformers import AutoModelForCausalLM

    device = "cuda" if attn in ("flash_attention_2", attention.VARLEN) else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return (
        AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn, dtype=dtype, **config)
        .to(device)
        .eval()
    )


def _to(batch, device):
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@pytest.mark.parametrize("attn", ATTENTION)
@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_mistral", "tiny_qwen"])
def test_padding_free_loss_equals_padded_loss(attn, architecture, request):
    model = _model(request.getfixturevalue(architecture), attn)
    examples = _examples()
    device = model.device
    padded = _to(PaddedCollator(pad_id=0, side="right")(examples), device)
    packed = _to(PaddingFreeCollator()(examples), device)
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


@pytest.mark.parametrize("attn", ["sdpa", "eager", attention.PER_EXAMPLE])
def test_the_packing_check_accepts_models_that_keep_examples_apart(attn, tiny_llama):
    assert keeps_examples_apart(_model(tiny_llama, attn), PaddingFreeCollator())


@pytest.mark.parametrize("attn", ["sdpa", attention.PER_EXAMPLE])
def test_the_packing_check_rejects_a_model_whose_examples_mix(attn, tiny_llama):
    model = _model(tiny_llama, attn)
    original = model.forward

    def ignores_position_resets(*args, position_ids=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith(("cu_seq", "max_length"))}
        return original(*args, **kwargs)  # drops the boundaries: examples attend to each other

    model.forward = ignores_position_resets
    assert not keeps_examples_apart(model, PaddingFreeCollator())


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


# Per-example attention (finetuning.model.attention): loss and gradients of a padding-free batch
# equal the padded batch's, with no dense mask built.

# Lengths with a 1-token example, two of equal length, and ones longer than Mistral's window;
# "equal": a run of equal examples longer than the window (one batched call with a window mask).
LENGTHS = {"several": (9, 1, 13, 4, 4), "one": (11,), "equal": (6, 6, 6, 2)}
SLIDING = {
    "tiny_llama": {},
    "tiny_mistral": {"sliding_window": 4},
    # Layer 0 full attention, layer 1 a window of 4: the window is per layer.
    "tiny_qwen": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
}


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_mistral", "tiny_qwen"])
def test_per_example_attention_gives_the_padded_loss_and_gradients(architecture, lengths, request):
    path = request.getfixturevalue(architecture)
    examples = _examples(seed=7, lengths=lengths)
    padded_model = _model(path, "sdpa", **SLIDING[architecture])
    model = _model(path, "sdpa", **SLIDING[architecture])
    assert attention.choose(model, None) == attention.PER_EXAMPLE
    padded_loss, padded_grads = _loss_and_grads(
        padded_model, PaddedCollator(pad_id=0, side="right")(examples)
    )
    loss, grads = _loss_and_grads(model, PaddingFreeCollator()(examples))
    assert attention.kernels_ran() == ["per-example sdpa"]
    torch.testing.assert_close(loss, padded_loss, atol=1e-6, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def _graph_nodes(tensor) -> set[str]:
    seen, names, todo = set(), set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_per_example_attention_cuts_the_row_with_one_split(monkeypatch):
    # Slicing each example out of the row would give every example a full-row zero gradient in
    # the backward pass; a split's backward is one cat. Equal neighbours share one sdpa call.
    import torch.nn.functional as F

    calls = []
    original = F.scaled_dot_product_attention

    def counting(query, *args, **kwargs):
        calls.append(tuple(query.shape))
        return original(query, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    q, k, v = (torch.randn(1, 4, 23, 8, requires_grad=True) for _ in range(3))
    bounds = torch.tensor([0, 5, 10, 15, 22, 23], dtype=torch.int32)
    module = torch.nn.Module()
    out, _ = attention.per_example_attention(module, q, k, v, None, cu_seq_lens_q=bounds)
    assert out.shape == (1, 23, 4, 8)
    assert calls == [(3, 4, 5, 8), (1, 4, 7, 8), (1, 4, 1, 8)]  # 3 x 5 in one call
    nodes = _graph_nodes(out)
    assert "SliceBackward0" not in nodes and "SplitWithSizesBackward0" in nodes
    for a, b in ((0, 5), (5, 10), (15, 22)):  # each example equals its own causal sdpa
        alone = original(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], is_causal=True)
        torch.testing.assert_close(out[:, a:b], alone.transpose(1, 2), atol=1e-6, rtol=1e-5)


def test_the_sliding_window_is_kept_inside_each_example(tiny_mistral):
    # With a window of 4 the 13-token example sees fewer keys than with full attention, so the
    # loss differs from the full-attention one (and equals the padded sliding-window loss above).
    examples = _examples(seed=7, lengths=(13, 9))
    batch = PaddingFreeCollator()(examples)
    losses = []
    for window in (4, None):
        model = _model(tiny_mistral, attention.PER_EXAMPLE, sliding_window=window)
        with torch.no_grad():
            losses.append(model(**batch, use_cache=False).loss)
    assert abs(losses[0] - losses[1]) > 1e-4


def test_no_dense_mask_is_built_for_a_padding_free_batch(tiny_llama, monkeypatch):
    import transformers.masking_utils as masking

    built = []
    original = masking.sdpa_mask

    def counting_sdpa_mask(*args, **kwargs):
        mask = original(*args, **kwargs)
        built.append(mask)
        return mask

    monkeypatch.setattr(masking, "sdpa_mask", counting_sdpa_mask)
    model = _model(tiny_llama, attention.PER_EXAMPLE)
    examples = _examples(lengths=(40, 30, 50))
    with torch.no_grad():
        model(**PaddingFreeCollator()(examples), use_cache=False)
        assert built == []  # no mask at all, let alone 120 x 120
        model(**PaddedCollator(pad_id=0)(examples), use_cache=False)
    assert len(built) == 1 and built[0].shape[-1] == 50  # padded batches keep sdpa's mask


def test_choose_keeps_what_the_user_asked_for(tiny_llama):
    eager = _model(tiny_llama, "eager")
    assert attention.choose(eager, "eager") == "eager"
    assert eager.config._attn_implementation == "eager"
    model = _model(tiny_llama, "sdpa")
    assert attention.choose(model, "sdpa") == attention.PER_EXAMPLE  # varlen needs CUDA bf16
    attention.restore_sdpa(model)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="varlen_attn needs a CUDA GPU")
@pytest.mark.parametrize("architecture", ["tiny_llama", "tiny_mistral"])
def test_varlen_attention_gives_the_padded_loss_on_cuda(architecture, request):
    path = request.getfixturevalue(architecture)
    examples = _examples(seed=7, lengths=LENGTHS["several"])
    padded = PaddedCollator(pad_id=0)(examples)
    packed = PaddingFreeCollator()(examples)
    losses = []
    for attn, batch in (("sdpa", padded), (attention.VARLEN, packed)):
        model = _model(path, attn, **SLIDING[architecture])
        batch = _to(batch, "cuda")
        with torch.no_grad():
            losses.append(model(**batch, use_cache=False).loss.float())
    assert attention.kernels_ran() == ["varlen_attn (CUDA)"]
    torch.testing.assert_close(losses[1], losses[0], atol=2e-2, rtol=2e-2)
