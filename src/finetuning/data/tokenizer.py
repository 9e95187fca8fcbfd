"""Tokenizer setup: loading, template tokens, the pad strategy, and the inference-ready save."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetuning.config.data import ChatTemplateName, MissingPadTokenStrategy
from finetuning.config.experiment import ExperimentConfig
from finetuning.data.templates import SPECS, end_marker
from finetuning.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class TokenizerSetup:
    """The prepared tokenizer and what preparing it changed.

    Attributes:
        tokenizer: The tokenizer, with template tokens and pad token set.
        added_tokens: Template tokens that were missing and got added (the model must grow).
        pad_note: How the pad token was chosen.
        convert_pad_to_eos: The collator turns input-side padding into EOS (unk-convert-to-eos).
        processor: A vision-language model's processor (its tokenizer is ``tokenizer``), else None.
    """

    tokenizer: Any
    added_tokens: list[str] = field(default_factory=list)
    pad_note: str = ""
    convert_pad_to_eos: bool = False
    processor: Any = None


def load_tokenizer(config: ExperimentConfig) -> Any:
    """Load the tokenizer named by ``run_conf.tokenizer`` (default: the model's)."""
    from transformers import AutoTokenizer

    run = config.run_conf
    source = run.tokenizer or run.model
    try:
        return AutoTokenizer.from_pretrained(
            source,
            use_fast=run.use_fast_tokenizer,
            trust_remote_code=run.model_args.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        key = "run_conf.tokenizer" if run.tokenizer else "run_conf.model"
        if "trust_remote_code" in str(exc):
            raise UserError(
                f"{key}: {source!r} needs its own code to load: set "
                "run_conf.model_args.trust_remote_code: true if you trust it"
            ) from None
        raise UserError(f"{key}: cannot load a tokenizer from {source!r}: {exc}") from None


def setup_tokenizer(config: ExperimentConfig, tokenizer: Any) -> TokenizerSetup:
    """Apply padding side, template tokens and the missing-pad-token strategy."""
    data = config.data_conf
    tokenizer.padding_side = data.padding_side
    added = []
    template = data.chat_template_name
    if template != ChatTemplateName.KEEP_ORIGINAL:
        vocab = tokenizer.get_vocab()
        added = [t for t in SPECS[template].added_tokens if t not in vocab]
        if added:
            tokenizer.add_special_tokens({"additional_special_tokens": added})
    setup = TokenizerSetup(tokenizer, added)
    strategy = data.missing_pad_token_strategy
    if strategy == MissingPadTokenStrategy.UNK_CONVERT_TO_EOS:
        if tokenizer.pad_token is not None:
            raise UserError(
                "data_conf.missing_pad_token_strategy: unk-convert-to-eos needs a tokenizer "
                f"without a pad token, but this one has {tokenizer.pad_token!r}: use another "
                "strategy (it only applies when the pad token is missing)"
            )
        _need(tokenizer, "unk_token", strategy)
        tokenizer.pad_token = tokenizer.unk_token
        setup.convert_pad_to_eos = True
        setup.pad_note = "pad = UNK, turned into EOS on the input side by the collator"
    elif tokenizer.pad_token is not None:
        setup.pad_note = f"pad = {tokenizer.pad_token!r} (the tokenizer's own)"
    else:
        attr = {
            MissingPadTokenStrategy.EOS_REPURPOSE: "eos_token",
            MissingPadTokenStrategy.BOS_REPURPOSE: "bos_token",
            MissingPadTokenStrategy.UNK_REPURPOSE: "unk_token",
        }[strategy]
        _need(tokenizer, attr, strategy)
        tokenizer.pad_token = getattr(tokenizer, attr)
        setup.pad_note = f"pad = {tokenizer.pad_token!r} ({strategy.value})"
    return setup


def _need(tokenizer: Any, attr: str, strategy: MissingPadTokenStrategy) -> None:
    if getattr(tokenizer, attr, None) is None:
        raise UserError(
            f"data_conf.missing_pad_token_strategy: {strategy.value} needs the tokenizer's "
            f"{attr}, which it does not have: choose another strategy"
        )


def save_for_inference(
    tokenizer: Any, template: ChatTemplateName, out_dir: str | Path, processor: Any = None
) -> None:
    """Save a copy of the tokenizer set up for inference, and the stop ids into the model files.

    BOS is added, EOS is not, EOS becomes the template's assistant end marker (so generation
    stops where training taught the model to stop) and the named template is stored as the
    chat template (keep-original keeps the tokenizer's own). When ``out_dir`` holds a saved
    model, its ``config.json`` and ``generation_config.json`` get the same stop ids (the end
    marker and the tokenizer's own EOS) and the pad id, for tools that read those files.
    A vision-language model's ``processor`` is saved too (image processor, chat template).
    """
    import copy

    from finetuning.data.stop_tokens import stop_ids, write_stop_ids

    inference = copy.deepcopy(tokenizer)
    if template != ChatTemplateName.KEEP_ORIGINAL:
        inference.chat_template = SPECS[template].jinja
        inference.eos_token = end_marker(template, tokenizer)
    inference.add_bos_token = True
    inference.add_eos_token = False
    inference.save_pretrained(out_dir)
    if processor is not None:  # its own files beside the tokenizer's (AutoProcessor loads them)
        processor.save_pretrained(out_dir)
    write_stop_ids(out_dir, *stop_ids(tokenizer, template))
