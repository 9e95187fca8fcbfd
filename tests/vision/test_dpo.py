"""DPO on image rows: the prompt's images expanded and checked, completions as text, batches
with the images twice (chosen half, rejected half)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from finetuning.config.data import ChatTemplateName
from finetuning.data.encode import EncodeSettings
from finetuning.data.images import ROW_KEY, attach
from finetuning.data.prepare import EncodedSplit
from finetuning.data.vision_preference import (
    VisionPreferenceCollator,
    encode_vision_preference_chunk,
    vision_preference_dataset,
)
from finetuning.testing import synthetic_image_chats, write_jsonl
from tests.helpers import minimal_dpo, run_main, summary, write_config


def _preferences(folder, n=4):
    rows = []
    for row in synthetic_image_chats(n, folder):
        *prompt, answer = row["messages"]
        wrong = "blue." if answer["content"] != "blue." else "red."
        rows.append(
            {
                "prompt_messages": prompt,
                "chosen_messages": [answer],
                "rejected_messages": [{"role": "assistant", "content": wrong}],
            }
        )
    return rows


@pytest.fixture(scope="module")
def processor(tiny_gemma3):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_gemma3)


def test_prompt_images_and_text_completions(tmp_path, processor):
    rows = _preferences(tmp_path)
    for i, row in enumerate(rows):
        assert attach(row, tmp_path) == ""
        row["_where"] = f"p.jsonl:{i + 1}"
    settings = EncodeSettings(ChatTemplateName.KEEP_ORIGINAL, 256)
    store = encode_vision_preference_chunk(rows, processor, settings)
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image_soft_token>")
    for i, row in enumerate(rows):
        triple = store.triple(i)
        assert tok.decode(triple["chosen_ids"]) == row["chosen_messages"][0]["content"] + (
            "<end_of_turn>\n"
        )
        prompt = np.asarray(triple["prompt_ids"])
        assert (store.types(i) == (prompt == image_id)).all() and store.types(i).sum() == 4
    dataset = vision_preference_dataset(EncodedSplit(store, np.arange(len(rows))))
    collator = VisionPreferenceCollator(0, rows, processor, "token_type_ids")
    batch = collator([dataset[i] for i in range(len(rows))])
    assert batch["input_ids"].shape[0] == 2 * len(rows)
    assert batch["pixel_values"].shape == (2 * len(rows), 3, 32, 32)
    assert torch.equal(batch["token_type_ids"].bool(), batch["input_ids"] == image_id)
    # the rejected half sees the same image as its chosen row
    first = rows[0][ROW_KEY][0].open()
    alone = processor.image_processor([first], return_tensors="pt")["pixel_values"][0]
    assert torch.equal(batch["pixel_values"][0], alone)
    assert torch.equal(batch["pixel_values"][len(rows)], alone)


@pytest.mark.slow
@pytest.mark.full
def test_dpo_trains_on_image_rows(tmp_path, tiny_gemma3):
    data = write_jsonl(tmp_path / "pref.jsonl", _preferences(tmp_path, 8))
    config = minimal_dpo(tiny_gemma3, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["peft_conf"] = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "peft_kwargs": {"r": 8}}
    out = tmp_path / "out"
    config["training_args"] = {
        "learning_rate": 5e-3, "max_steps": 2, "logging_steps": 1, "output_dir": str(out),
        "max_length": 128,
    }  # fmt: skip
    result = run_main("dpo", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images: 8 in 8 of 8 training rows" in (out / "data_preflight.txt").read_text()
    assert summary(out)["steps"] == 2
    assert (out / "checkpoint-final" / "processor_config.json").is_file()
    logged = json.loads((out / "run_summary.json").read_text())
    assert "rewards/margins" in json.dumps(logged)


def test_images_in_a_completion_are_refused(tmp_path, processor):
    from finetuning.errors import UserError

    row = _preferences(tmp_path, 1)[0]
    row["chosen_messages"][0]["content"] = [{"type": "image"}, {"type": "text", "text": "x"}]
    row["_where"] = "p.jsonl:1"
    settings = EncodeSettings(ChatTemplateName.KEEP_ORIGINAL, 256)
    with pytest.raises(UserError, match=r"p\.jsonl:1: `chosen_messages` has an image"):
        encode_vision_preference_chunk([row], processor, settings)
