"""Encoding image rows for a tiny Gemma 3: exact text-only masks, token types, batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from finetuning.config.data import ChatTemplateName
from finetuning.data.encode import IGNORE, TOO_LONG, TRUNCATED, EncodeSettings
from finetuning.data.images import ROW_KEY, attach
from finetuning.data.prepare import EncodedSplit
from finetuning.data.vision import encode_vision_chunk
from finetuning.data.vision_batches import VisionCollator, VisionDataset, token_type_key
from finetuning.errors import UserError
from finetuning.testing import synthetic_image_chats


@pytest.fixture(scope="module")
def processor(tiny_gemma3):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_gemma3)


def _rows(folder: Path, n=3, convention="parts") -> list[dict]:
    rows = synthetic_image_chats(n, folder, convention)
    for i, row in enumerate(rows):
        assert attach(row, folder) == ""
        row["_where"] = f"data.jsonl:{i + 1}"
    return rows


def _settings(**kwargs) -> EncodeSettings:
    kwargs.setdefault("completions_only", True)
    return EncodeSettings(ChatTemplateName.KEEP_ORIGINAL, kwargs.pop("max_length", 512), **kwargs)


def test_trained_tokens_are_exactly_the_answers_and_end_markers(tmp_path, processor):
    rows = _rows(tmp_path, 6)
    rows[0]["messages"] += [  # a second exchange after the image turn
        {"role": "user", "content": "and again?"},
        {"role": "assistant", "content": "still."},
    ]
    store = encode_vision_chunk(rows, processor, _settings())
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image_soft_token>")
    for i, row in enumerate(rows):
        ids, labels = store.row(i)
        answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
        trained = tok.decode(ids[labels != IGNORE].tolist())
        # keep-original's span: the answer, the end-of-turn marker and the newline after it
        assert trained == "".join(f"{a}<end_of_turn>\n" for a in answers)
        # Gemma 3's processor expands <start_of_image> into the image tokens; none is trained
        types, owner = store.types(i), store.image_of(i)
        assert (types == (ids == image_id)).all() and types.sum() == 4
        assert (labels[owner > 0] == IGNORE).all() and owner.max() == 1
        # the same ids as the processor's own encoding of the rendered row
        text = processor.apply_chat_template(_for_template(row["messages"]))
        ref = processor(
            text=[text], images=[[r.open() for r in row[ROW_KEY]]], add_special_tokens=False
        )
        assert ref["input_ids"][0] == ids.tolist()
        assert ref["token_type_ids"][0] == types.tolist()


def _for_template(messages):
    return [
        {**m, "content": [{"type": "image"} if p["type"] == "image" else p for p in m["content"]]}
        if isinstance(m["content"], list)
        else m
        for m in messages
    ]


def test_the_system_turn_is_folded_into_the_first_user_turn(tmp_path, processor):
    row = _rows(tmp_path, 1)[0]  # row 0 of synthetic_image_chats has a system turn
    assert row["messages"][0]["role"] == "system"
    ids, _ = encode_vision_chunk([row], processor, _settings()).row(0)
    text = processor.tokenizer.decode(ids.tolist())
    assert text.startswith("<s><start_of_turn>user\nanswer with one word.\n\n\n\n<start_of_image>")
    assert "system" not in text


def test_image_tokens_are_never_trained_even_on_full_sequences(tmp_path, processor):
    rows = _rows(tmp_path, 2, "trl")
    store = encode_vision_chunk(rows, processor, _settings(completions_only=False))
    _, labels = store.row(0)
    owner = store.image_of(0)
    assert (labels[owner == 0] != IGNORE).all() and (labels[owner > 0] == IGNORE).all()
    assert store.image_tokens[0] == (owner > 0).sum() > 4  # the expansion: \n\n, boi, 4, eoi, \n\n


def test_a_cut_through_an_image_drops_the_row(tmp_path, processor):
    rows = _rows(tmp_path, 2)
    store = encode_vision_chunk(
        rows, processor, _settings(max_length=12, length_handling="truncate")
    )
    assert store.status.tolist() == [TOO_LONG, TOO_LONG]
    full = int(store.full_lengths[1])
    store = encode_vision_chunk(
        rows, processor, _settings(max_length=full - 2, length_handling="truncate")
    )
    assert store.status[1] == TRUNCATED  # the cut is after the image: truncated, not dropped


def test_images_in_an_assistant_turn_are_refused(tmp_path, processor):
    row = _rows(tmp_path, 2)[1]
    row["messages"][-1]["content"] = [{"type": "image"}, {"type": "text", "text": "x"}]
    with pytest.raises(UserError, match=r"data.jsonl:2: messages\[1\] is an assistant turn"):
        encode_vision_chunk([row], processor, _settings())


def test_batches_carry_token_types_and_pixel_values(tmp_path, processor):
    rows = _rows(tmp_path, 3)
    rows.append(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    store = encode_vision_chunk(rows, processor, _settings())
    key = token_type_key(processor)
    assert key == "token_type_ids"
    dataset = VisionDataset(EncodedSplit(store, np.arange(4)), rows, processor, key)
    batch = VisionCollator(0, "right", (key,))([dataset[i] for i in range(4)])
    longest = int(store.lengths().max())
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == (4, longest)
    assert batch["pixel_values"].shape == (3, 3, 32, 32)  # three images, the text row has none
    image_id = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert torch.equal(batch["token_type_ids"].bool(), batch["input_ids"] == image_id)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE).all()


@pytest.fixture(scope="module")
def llava_processor(tiny_llava):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_llava)


def test_llava_masks_and_image_tokens(tmp_path, llava_processor):
    """A second family: LLaVA's processor repeats <image> once per patch, no token types."""
    rows = _rows(tmp_path, 4)
    store = encode_vision_chunk(rows, llava_processor, _settings())
    tok = llava_processor.tokenizer
    image_id = tok.convert_tokens_to_ids("<image>")
    for i, row in enumerate(rows):
        ids, labels = store.row(i)
        trained = tok.decode(ids[labels != IGNORE].tolist())
        # " green" is one token: it starts in the generation prompt's space, so it is trained
        assert trained == f" {row['messages'][-1]['content']}</s>\n"
        owner = store.image_of(i)
        assert ((ids == image_id) <= (owner > 0)).all() and (ids == image_id).sum() == 16
        assert (labels[owner > 0] == IGNORE).all() and not store.types(i).any()
    assert token_type_key(llava_processor) is None


def test_two_images_in_one_row_keep_their_order(tmp_path, processor):
    from PIL import Image

    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 24), (0, 0, 255)).save(tmp_path / "b.png")
    row = {
        "messages": [
            {"role": "user", "content": [
                {"type": "image", "image": "a.png"}, {"type": "text", "text": "and"},
                {"type": "image", "image": "b.png"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": "two."},
        ],
        "_where": "d.jsonl:1",
    }  # fmt: skip
    assert attach(row, tmp_path) == ""
    store = encode_vision_chunk([row], processor, _settings())
    ids, labels = store.row(0)
    owner = store.image_of(0)
    assert [k for k in dict.fromkeys(owner.tolist()) if k] == [1, 2]
    between = processor.tokenizer.decode(ids[(owner == 0) & (np.arange(len(ids)) > 0)].tolist())
    assert "and" in between and store.images[0] == 2
    dataset = VisionDataset(EncodedSplit(store, np.arange(1)), [row], processor, "token_type_ids")
    item = dataset[0]
    assert item["pixel_values"].shape == (2, 3, 32, 32)
    red, blue = item["pixel_values"][0], item["pixel_values"][1]
    assert red[0].mean() > red[2].mean() and blue[2].mean() > blue[0].mean()  # in row order
    assert processor.tokenizer.decode(ids[labels != IGNORE].tolist()) == "two.<end_of_turn>\n"
