"""Pad strategies and the collators (padded, padding-free, unk-convert-to-eos)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from finetuning.config.loading import load_config_dict
from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
from finetuning.data.encode import IGNORE
from finetuning.data.tokenizer import setup_tokenizer
from finetuning.errors import UserError
from tests.helpers import minimal_sft


def _config(strategy, template="keep-original", side="right"):
    raw = minimal_sft()
    raw["data_conf"].update(
        missing_pad_token_strategy=strategy, chat_template_name=template, padding_side=side
    )
    return load_config_dict(raw, "sft").config


@pytest.mark.parametrize(
    ("strategy", "attr"),
    [("eos-repurpose", "eos_token"), ("bos-repurpose", "bos_token"), ("unk-repurpose", "unk_token"),
     ("unk-convert-to-eos", "unk_token")],
)  # fmt: skip
def test_pad_strategies(strategy, attr, tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    assert tok.pad_token is None
    setup = setup_tokenizer(_config(strategy), tok)
    assert tok.pad_token == getattr(tok, attr)
    assert setup.convert_pad_to_eos == (strategy == "unk-convert-to-eos")


def test_existing_pad_token_is_kept(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.unk_token
    setup_tokenizer(_config("eos-repurpose"), tok)
    assert tok.pad_token == tok.unk_token


def test_unk_convert_to_eos_refuses_an_existing_pad_token(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.bos_token
    with pytest.raises(UserError, match="unk-convert-to-eos needs a tokenizer without a pad token"):
        setup_tokenizer(_config("unk-convert-to-eos"), tok)


def test_template_tokens_are_added_and_reported(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    before = len(tok)
    setup = setup_tokenizer(_config("bos-repurpose", "simplified-llama31"), tok)
    assert setup.added_tokens == ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    assert len(tok) == before + 3
    assert tok.convert_tokens_to_ids("<|eot_id|>") >= before


EXAMPLES = [
    {"input_ids": np.array([1, 5, 6, 7]), "labels": np.array([-100, -100, 6, 7])},
    {"input_ids": np.array([1, 8]), "labels": np.array([-100, 8])},
]


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_collator(side):
    batch = PaddedCollator(pad_id=0, side=side)(EXAMPLES)
    if side == "right":
        assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [1, 8, 0, 0]]
        assert batch["labels"].tolist() == [[-100, -100, 6, 7], [-100, 8, -100, -100]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    else:
        assert batch["input_ids"].tolist() == [[1, 5, 6, 7], [0, 0, 1, 8]]
        assert batch["labels"].tolist() == [[-100, -100, 6, 7], [-100, -100, -100, 8]]


def test_unk_convert_to_eos_collation():
    batch = PaddedCollator(pad_id=0, side="right", eos_id=2)(EXAMPLES)
    assert batch["input_ids"].tolist()[1] == [1, 8, 2, 2]  # input-side padding is EOS
    assert batch["labels"].tolist()[1] == [-100, 8, IGNORE, IGNORE]  # its labels stay ignored


def test_padding_free_collator():
    batch = PaddingFreeCollator()(EXAMPLES)
    assert batch["input_ids"].tolist() == [[1, 5, 6, 7, 1, 8]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1]]
    # Each example's first label is masked: it would be predicted across the boundary.
    assert batch["labels"].tolist() == [[-100, -100, 6, 7, -100, 8]]
    assert "attention_mask" not in batch
    # The boundaries, under the names of transformers' flash-attention kwargs.
    assert batch["cu_seq_lens_q"].tolist() == batch["cu_seq_lens_k"].tolist() == [0, 4, 6]
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == 4


@pytest.mark.parametrize("packed", [True, False])
def test_collators_mark_the_positions_whose_next_label_is_trained(packed):
    if packed:
        batch = PaddingFreeCollator(keep_trained_logits=True)(EXAMPLES)
        # labels [-100, -100, 6, 7, -100, 8]: positions 1, 2 and 4 predict a trained label.
        assert batch["logits_to_keep"].tolist() == [[False, True, True, False, True, False]]
    else:
        batch = PaddedCollator(pad_id=0, keep_trained_logits=True)(EXAMPLES)
        assert batch["logits_to_keep"].tolist() == [
            [False, True, True, False],
            [True, False, False, False],
        ]
    assert batch["logits_to_keep"].dtype == torch.bool
    assert "logits_to_keep" not in PaddingFreeCollator()(EXAMPLES)
