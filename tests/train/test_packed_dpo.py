"""Packed DPO gives TRL's padded DPO loss, rewards and gradients on the same batch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from finetuning.model import attention
from finetuning.train.methods.dpo import pretokenized_trainer_class


def _rows(n=4, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        prompt = rng.integers(3, 700, int(rng.integers(2, 9))).tolist()
        chosen = rng.integers(3, 700, 1 if i == 0 else int(rng.integers(2, 12))).tolist()
        rejected = rng.integers(3, 700, int(rng.integers(1, 12))).tolist()
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def _trainer(path, tmp_path, packed, precompute, loss_type="sigmoid"):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ref_model = None if precompute else copy.deepcopy(model).eval().requires_grad_(False)
    if packed:
        attention.choose(model, None)
        if ref_model is not None:
            attention.choose(ref_model, None)
    args = DPOConfig(
        output_dir=str(tmp_path / ("packed" if packed else "padded")),
        per_device_train_batch_size=4,
        precompute_ref_log_probs=precompute,
        loss_type=[loss_type],
        beta=0.5,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = pretokenized_trainer_class(packed)(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(_rows()),
        processing_class=_tokenizer(path),
    )
    with torch.no_grad():  # the policy moves away from the reference: rewards are not ~0
        for i, p in enumerate(model.parameters()):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.02)
    return trainer


def _tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def _step(trainer, batch):
    model = trainer.model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads


@pytest.mark.parametrize(("precompute", "loss_type"), [(False, "sigmoid"), (True, "ipo")])
def test_packed_dpo_equals_padded_dpo(precompute, loss_type, tiny_llama, tmp_path):
    padded = _trainer(
        tiny_llama, tmp_path, packed=False, precompute=precompute, loss_type=loss_type
    )
    packed = _trainer(tiny_llama, tmp_path, packed=True, precompute=precompute, loss_type=loss_type)
    rows = [packed.train_dataset[i] for i in range(4)]
    batch = padded.data_collator(rows)
    # The reference log-probs (what precompute_ref_log_probs stores) are the padded path's.
    for a, b in zip(
        packed.compute_ref_log_probs(packed.model, batch),
        padded.compute_ref_log_probs(padded.model, batch),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)
    attention.reset_kernels_ran()
    loss, metrics, grads = _step(packed, batch)
    assert attention.kernels_ran() == ["per-example sdpa"]  # no padded forward happened
    padded_loss, padded_metrics, padded_grads = _step(padded, batch)
    # Sequence log-probs are sums of ~20 fp32 terms (~1e-5 apart); the loss and rewards are
    # differences of them.
    torch.testing.assert_close(loss, padded_loss, atol=1e-4, rtol=1e-4)
    assert abs(metrics["rewards/margins"]) > 1e-2  # a meaningful comparison
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen"):
        assert metrics[key] == pytest.approx(padded_metrics[key], rel=1e-4, abs=1e-4), key
    assert metrics.keys() == padded_metrics.keys()
    assert grads.keys() == padded_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=2e-5, rtol=1e-4, msg=name)


def test_packing_runs_one_row(tiny_llama, tmp_path):
    from finetuning.train.methods.packed_dpo import pack_padded

    trainer = _trainer(tiny_llama, tmp_path, packed=True, precompute=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    inputs, _ = pack_padded(batch["input_ids"], batch["attention_mask"], labels)
    lengths = batch["attention_mask"].sum(1)
    assert inputs["input_ids"].shape == (1, int(lengths.sum()))  # no padding token computed
    assert inputs["cu_seq_lens_q"].tolist() == [0, *lengths.cumsum(0).tolist()]
    # No sequence's last token predicts the next sequence's first.
    ends = inputs["cu_seq_lens_q"][1:] - 1
    assert (inputs["shift_labels"][0, ends] == -100).all()
