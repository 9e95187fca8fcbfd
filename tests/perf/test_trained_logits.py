"""The LM head and loss only on trained positions give the full-logits loss and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
from finetuning.model import attention
from finetuning.train import loss as loss_module
from finetuning.train.loss import chunked_causal_lm_loss, keeps_trained_logits


def _examples(seed=0, lengths=(9, 4, 13, 1)):
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(3, 300, n)
        labels = ids.copy()
        labels[: max(1, n // 2)] = -100  # a prompt that is not trained
        out.append({"input_ids": ids, "labels": labels})
    return out


def _model(path, peft=False, **config):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **config)
    if peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "lm_head"], lora_dropout=0.0)
        model = get_peft_model(model, lora)
        for name, p in model.named_parameters():  # non-zero B so lm_head's adapter matters
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    attention.choose(model, None)
    return model


def _loss_and_grads(model, batch, num_items=None, chunk_tokens=4096):
    model.zero_grad()
    batch = dict(batch)
    labels = batch.pop("labels")
    outputs = model(**batch, use_cache=False)
    loss = chunked_causal_lm_loss(outputs, labels, num_items, chunk_tokens=chunk_tokens)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, outputs.logits.shape


CASES = {
    "plain": {},
    "tied": {"tie_word_embeddings": True},
    "lora_on_lm_head": {"peft": True},
}


@pytest.mark.parametrize(
    ("packed", "case"),
    [*((True, c) for c in CASES.values()), (False, CASES["plain"])],
    ids=[*(f"padding_free-{c}" for c in CASES), "padded-plain"],
)
def test_kept_logits_give_the_full_logits_loss_and_gradients(case, packed, tiny_llama):
    model = _model(tiny_llama, **case)
    assert keeps_trained_logits(model)
    examples = _examples()
    if packed:
        full, kept = PaddingFreeCollator(), PaddingFreeCollator(keep_trained_logits=True)
    else:
        full = PaddedCollator(pad_id=0)
        kept = PaddedCollator(pad_id=0, keep_trained_logits=True)
    loss, grads, full_shape = _loss_and_grads(model, full(examples), num_items=11)
    kept_batch = kept(examples)
    kept_loss, kept_grads, kept_shape = _loss_and_grads(model, kept_batch, num_items=11)
    trained = int((kept_batch["labels"][:, 1:] != -100).sum())
    assert kept_shape == (trained, full_shape[-1])  # the LM head ran on trained positions only
    assert trained < 0.6 * full_shape[0] * full_shape[1]
    torch.testing.assert_close(kept_loss, loss, atol=1e-6, rtol=1e-6)
    assert kept_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(kept_grads[name], grad, atol=1e-7, rtol=1e-5, msg=name)


def test_kept_logits_in_several_chunks(tiny_llama):
    model = _model(tiny_llama)
    batch = PaddingFreeCollator(keep_trained_logits=True)(_examples(seed=2))
    reference, ref_grads, _ = _loss_and_grads(model, batch)
    chunked, grads, _ = _loss_and_grads(model, batch, chunk_tokens=3)
    torch.testing.assert_close(chunked, reference, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], atol=1e-7, rtol=1e-5, msg=name)


def test_a_model_that_ignores_logits_to_keep_is_detected(tiny_llama):
    model = _model(tiny_llama)
    original = model.forward

    def full_logits_only(*args, logits_to_keep=0, **kwargs):
        return original(*args, **kwargs)

    model.forward = full_logits_only
    assert not keeps_trained_logits(model)


def test_kept_logits_that_do_not_match_the_labels_are_an_error():
    labels = torch.tensor([[-100, 5, 6, -100, 7]])
    with pytest.raises(ValueError, match="2 kept logits for 3 trained labels"):
        chunked_causal_lm_loss({"logits": torch.randn(2, 10)}, labels)


def test_one_chunk_is_not_recomputed_in_the_backward_pass(monkeypatch):
    calls = []
    original = loss_module._chunk_loss_sum

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(loss_module, "_chunk_loss_sum", counting)
    logits = torch.randn(1, 12, 10, requires_grad=True)
    labels = torch.randint(0, 10, (1, 12))
    chunked_causal_lm_loss({"logits": logits}, labels).backward()
    assert len(calls) == 1  # forward only
    calls.clear()
    chunked_causal_lm_loss({"logits": logits}, labels, chunk_tokens=4).backward()
    assert len(calls) == 6  # three chunks, each recomputed once in the backward pass


def test_the_sft_recipe_computes_logits_only_where_labels_are_trained(
    tmp_path, tiny_llama, chat_data_small, monkeypatch
):
    import math

    from finetuning.config.loading import load_config
    from finetuning.train.methods import sft
    from tests.helpers import losses, minimal_sft, record_trainer_batches, write_config

    seen = record_trainer_batches(monkeypatch)
    config = minimal_sft(tiny_llama, chat_data_small)
    config["sft_args"]["train_on_completions_only"] = True
    config["training_args"] = {"max_steps": 2, "save_strategy": "no", "output_dir": str(tmp_path)}
    sft.run(load_config(write_config(tmp_path / "c.yaml", config), "sft"))
    assert len(seen) == 2
    for batch in seen:
        labels = batch["labels"]
        expected = torch.zeros_like(labels, dtype=torch.bool)
        expected[:, :-1] = labels[:, 1:] != -100
        assert torch.equal(batch["logits_to_keep"], expected)
        assert 0 < expected.sum() < labels.numel()
    assert all(math.isfinite(x) for x in losses(tmp_path))
