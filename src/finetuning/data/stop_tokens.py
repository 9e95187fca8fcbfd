"""Stop and pad token ids in saved model folders, so plain transformers stops where we trained.

Our inference tokenizer's EOS is the template's end-of-turn marker (``<|im_end|>`` for chat-ml),
but ``config.json`` and ``generation_config.json`` come from the base model and keep its EOS.
Tools that read ``generation_config.json`` for their stop tokens (``AutoModelForCausalLM``'s
``generate``, serving stacks) would then run on past the end of the answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetuning.config.data import ChatTemplateName
from finetuning.data.templates import end_marker


def stop_ids(tokenizer: Any, template: ChatTemplateName) -> tuple[list[int], int | None]:
    """The ids generation stops on (end-of-turn first, then the tokenizer's own EOS) and the pad id.

    Args:
        tokenizer: The training tokenizer (template tokens added, pad token set).
        template: The chat template the model was trained with.
    """
    ids: list[int] = []
    for token in (end_marker(template, tokenizer), tokenizer.eos_token):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id not in ids and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    return ids, tokenizer.pad_token_id


def write_stop_ids(folder: str | Path, eos_ids: list[int], pad_id: int | None) -> None:
    """Write ``eos_token_id`` and ``pad_token_id`` into the folder's config and generation config.

    ``config.json`` is only updated when the folder has one (an adapter folder has none);
    ``generation_config.json`` is created beside it when missing. One id is written as an int,
    several as a list (both forms are what transformers reads).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        return
    eos: int | list[int] = eos_ids[0] if len(eos_ids) == 1 else list(eos_ids)
    config = json.loads(config_path.read_text())
    targets = [config]
    if isinstance(config.get("text_config"), dict):  # multimodal configs nest the text model's
        targets.append(config["text_config"])
    for target in targets:
        target["eos_token_id"] = eos
        if pad_id is not None:
            target["pad_token_id"] = pad_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation_path = folder / "generation_config.json"
    generation = (
        json.loads(generation_path.read_text())
        if generation_path.is_file()
        else {"bos_token_id": config.get("bos_token_id")}
    )
    generation["eos_token_id"] = eos
    if pad_id is not None:
        generation["pad_token_id"] = pad_id
    generation_path.write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
