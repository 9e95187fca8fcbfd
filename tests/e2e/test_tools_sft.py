"""Tool-calling and reasoning conversations train end to end (chat-ml and keep-original)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from finetuning.testing import TINY_TOOL_CHAT_TEMPLATE, synthetic_tool_chats, write_jsonl
from tests.helpers import losses, minimal_sft, record_trainer_batches, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tool_model(tiny_llama, tmp_path_factory):
    """The tiny Llama with a tool-aware chat template (what keep-original renders with)."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("models") / "llama-tools"
    shutil.copytree(tiny_llama, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TINY_TOOL_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "template", ["chat-ml", pytest.param("keep-original", marks=pytest.mark.full)]
)
def test_tool_and_reasoning_chats_train(template, tmp_path, tool_model, monkeypatch):
    """Checked on the batches the trainer sees; the saved template renders as training did."""
    from transformers import AutoTokenizer

    from finetuning.config.data import ChatTemplateName
    from finetuning.config.loading import load_config
    from finetuning.data.templates import render
    from finetuning.train.methods import sft

    seen = record_trainer_batches(monkeypatch)
    rows = synthetic_tool_chats(24)
    data = write_jsonl(tmp_path / "tools.jsonl", rows)
    out = tmp_path / "out"
    config = minimal_sft(tool_model, data)
    config["data_conf"]["chat_template_name"] = template
    config["sft_args"].update(max_seq_length=1024, train_on_completions_only=True)
    config["training_args"] = {
        "learning_rate": 1e-2, "max_steps": 6, "logging_steps": 2, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    sft.run(load_config(write_config(tmp_path / "c.yaml", config), "sft"))
    history = losses(out)
    assert history[-1] < history[0], history
    saved = AutoTokenizer.from_pretrained(out / "checkpoint-final")
    call_marker = "<tool_call>" if template == "chat-ml" else "<call>"
    calls = 0
    for batch in seen:
        ids, labels = batch["input_ids"][0].numpy(), batch["labels"][0].numpy()
        trained = (labels != -100).astype(int)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], trained, [0]])))
        runs = [saved.decode(ids[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
        for run in runs:
            assert "tool_response" not in run and "<|tool|>" not in run, run
            assert "what color" not in run, run  # the user's question
            calls += call_marker in run
        assert sum(call_marker in r for r in runs) == len(runs) // 2  # a call, then an answer
    assert calls == 4 * len(seen)  # four conversations per batch, each with one call
    # Inference renders the conversation exactly as training did.
    name, training = ChatTemplateName(template), AutoTokenizer.from_pretrained(tool_model)
    for row in rows[:3]:
        trained_text = render(name, row["messages"], training, tools=row["tools"]).text
        assert saved.apply_chat_template(row["messages"], tools=row["tools"], tokenize=False) == (
            trained_text
        )
