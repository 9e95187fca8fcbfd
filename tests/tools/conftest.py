"""Trained tiny checkpoints shared by the tool tests (trained once per session, in-process)."""

from __future__ import annotations

import pytest

from finetuning.config.loading import load_config
from finetuning.testing import synthetic_chats, write_jsonl
from finetuning.train.methods import sft
from tests.helpers import minimal_sft, write_config

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _train(root, model, template, peft_conf, rows=800, steps=60, lr=3e-3):
    data = write_jsonl(root / "data.jsonl", synthetic_chats(rows, seed=5))
    config = minimal_sft(model, data, peft_conf=peft_conf)
    config["data_conf"]["chat_template_name"] = template
    config["training_args"] = {
        "learning_rate": lr, "max_steps": steps, "save_strategy": "no", "output_dir": str(root / "out"),
        "logging_steps": 10,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 16, "max_per_device_train_batch_size": 16}
    sft.run(load_config(write_config(root / "c.yaml", config), "sft"))
    return root / "out"


@pytest.fixture(scope="session")
def trained_chatml(tmp_path_factory):
    """The `finetuning init` example, trained: it has learnt the synthetic chats and when to stop."""
    from finetuning.tools.init import init_example

    root = tmp_path_factory.mktemp("example") / "example"
    sft.run(load_config(init_example(root), "sft"))
    return root / "checkpoints"


@pytest.fixture(scope="session")
def lora_new_tokens(tmp_path_factory, tiny_llama):
    """A chat-ml LoRA on a tokenizer without chat-ml tokens: new base model saved beside it."""
    peft_conf = {
        "peft_type": "LORA",
        "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": TARGETS},
    }
    return _train(
        tmp_path_factory.mktemp("lora-new"), tiny_llama, "chat-ml", peft_conf, steps=10, lr=1e-2
    )


@pytest.fixture(scope="session")
def lora_embeddings(tmp_path_factory, tiny_llama):
    """keep-original LoRA that also targets embed_tokens (PEFT then saves the embedding matrix)."""
    peft_conf = {
        "peft_type": "LORA",
        "peft_kwargs": {"r": 8, "lora_alpha": 16, "target_modules": [*TARGETS, "embed_tokens"]},
    }
    return _train(
        tmp_path_factory.mktemp("lora-emb"),
        tiny_llama,
        "keep-original",
        peft_conf,
        steps=10,
        lr=1e-2,
    )
