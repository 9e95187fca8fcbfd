"""What trains in a vision-language model: frozen vision parts, LoRA on the language model."""

from __future__ import annotations

import re

import pytest

from finetuning.model.vision import freeze_vision, is_vision_language, lora_targets


@pytest.fixture
def gemma3(tiny_gemma3):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_gemma3)


def _vision(name: str) -> bool:
    return "vision_tower" in name or "multi_modal_projector" in name


def test_the_vision_tower_and_projector_are_frozen_by_default(gemma3):
    assert is_vision_language(gemma3)
    names = freeze_vision(gemma3, train_vision=False)
    assert names == ["model.vision_tower", "model.multi_modal_projector"]
    for name, param in gemma3.named_parameters():
        assert param.requires_grad is not _vision(name), name


def test_train_vision_tower_keeps_them_trainable(gemma3):
    freeze_vision(gemma3, train_vision=True)
    assert all(p.requires_grad for p in gemma3.parameters())


def test_lora_targets_only_the_language_model_unless_told(gemma3):
    import torch

    linears = [n for n, m in gemma3.named_modules() if isinstance(m, torch.nn.Linear)]
    pattern = lora_targets(gemma3, train_vision=False)
    matched = [n for n in linears if re.fullmatch(pattern, n)]
    assert matched and all("language_model" in n for n in matched)
    assert "lm_head" not in matched
    assert {n for n in linears if "language_model" in n} == set(matched)
    with_vision = lora_targets(gemma3, train_vision=True)
    assert any(_vision(n) for n in linears if re.fullmatch(with_vision, n))
