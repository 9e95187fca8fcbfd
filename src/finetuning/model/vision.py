"""Vision-language models: what trains and what stays frozen.

A model whose config is a vision-language one (``finetuning.data.processor.is_vision_model``)
loads through ``AutoModelForImageTextToText``. The code names no
family: the parts are found by the names transformers gives them (``vision_tower`` /
``vision_model`` / ``visual`` for the encoder, ``multi_modal_projector`` / ``connector`` /
``merger`` for the projector, ``language_model`` for the decoder).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

#: Module names of the vision encoder and the projector across families.
VISION_PARTS = ("vision_tower", "vision_model", "visual", "image_encoder")
PROJECTOR_PARTS = ("multi_modal_projector", "mm_projector", "connector", "merger", "projector")


def _parts(model: Any, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in names and not any(name.startswith(f + ".") for f, _ in found):
            found.append((name, module))
    return found


def freeze_vision(model: Any, train_vision: bool) -> list[str]:
    """Freeze the vision encoder and projector (unless ``train_vision``); their module names."""
    parts = _parts(model, VISION_PARTS) + _parts(model, PROJECTOR_PARTS)
    if not train_vision:
        for _, module in parts:
            module.requires_grad_(False)
    names = [n for n, _ in parts]
    logger.info(
        "vision encoder and projector (%s): %s",
        ", ".join(names) or "none found",
        "trained (run_conf.train_vision_tower)" if train_vision else "frozen",
    )
    return names


def lora_targets(model: Any, train_vision: bool) -> str | None:
    """LoRA's default ``target_modules`` for a vision-language model: the language model's linears.

    A regex over module names (PEFT matches a string in full): every ``nn.Linear`` outside the
    vision encoder and projector (inside them too with ``train_vision``), the output head left out.
    """
    import re

    import torch

    skip = (
        () if train_vision else tuple(n for n, _ in _parts(model, VISION_PARTS + PROJECTOR_PARTS))
    )
    head = model.get_output_embeddings()
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and module is not head
            and not any(name == s or name.startswith(s + ".") for s in skip)
        }
    )
    if not leaves:
        return None
    excluded = "|".join(re.escape(s) for s in skip)
    leaf = "|".join(re.escape(n) for n in leaves)
    if not excluded:
        return rf".*\.({leaf})"
    return rf"^(?!.*({excluded})).*\.({leaf})$"


def is_vision_language(model: Any) -> bool:
    """Whether a loaded model is a vision-language one (its config has a ``vision_config``)."""
    return getattr(getattr(model, "config", None), "vision_config", None) is not None
