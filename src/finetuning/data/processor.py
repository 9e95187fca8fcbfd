"""A vision-language model's processor: telling such a model apart, and loading its processor.

A model whose config is a vision-language one (a model type ``AutoModelForImageTextToText`` knows,
with a ``vision_config``) loads through that Auto class, with its ``AutoProcessor`` in place of the
tokenizer (its tokenizer encodes the text; its image processor the images).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from finetuning.errors import UserError

#: Files a saved processor writes (one of them, by transformers version).
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


@functools.lru_cache(maxsize=16)
def _model_type(source: str, trust_remote_code: bool) -> tuple[str, bool]:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return "", False  # the loaders say what is wrong with the model path
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    vision = (
        config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        and getattr(config, "vision_config", None) is not None
    )
    return config.model_type, vision


def is_vision_source(source: str, trust_remote_code: bool = False) -> bool:
    """Whether the model at ``source`` (a folder or Hub id) is a vision-language model."""
    return _model_type(str(source), trust_remote_code)[1]


def has_processor(folder: str | Path) -> bool:
    """Whether a saved folder holds a processor (an image processor beside the tokenizer)."""
    return any((Path(folder) / name).is_file() for name in PROCESSOR_FILES)


def is_vision_model(config: Any) -> bool:
    """Whether ``run_conf.model`` is a vision-language model (read from its config only)."""
    run = config.run_conf
    return _model_type(run.model, run.model_args.trust_remote_code)[1]


def model_type(config: Any) -> str:
    """The ``model_type`` of ``run_conf.model`` (empty when its config cannot be read)."""
    run = config.run_conf
    return _model_type(run.model, run.model_args.trust_remote_code)[0]


def load_processor(config: Any) -> Any:
    """The ``AutoProcessor`` of ``run_conf.tokenizer`` (default: the model), with ``processor_args``.

    Raises:
        UserError: It cannot be loaded (e.g. a family whose image processor needs torchvision).
    """
    from transformers import AutoProcessor

    run = config.run_conf
    source = run.tokenizer or run.model
    try:
        processor = AutoProcessor.from_pretrained(
            source, trust_remote_code=run.model_args.trust_remote_code, **run.processor_args
        )
    except (OSError, ValueError, TypeError, ImportError) as exc:
        raise UserError(
            f"run_conf.model: cannot load the processor of the vision-language model {source!r}: "
            f"{str(exc).splitlines()[0]} (run_conf.processor_args: {run.processor_args or '{}'})"
        ) from None
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise UserError(
            f"run_conf.model: {source!r} is a vision-language model, but its processor "
            f"({type(processor).__name__}) has no image processor and tokenizer"
        )
    return processor
