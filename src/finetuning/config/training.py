"""Batch size, learning-rate overrides and SFT- and DPO-specific arguments."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetuning.config.paths import FolderName
from finetuning.config.strict import StrictModel

#: Far above any real run (a 4M-token batch of 2k-token sequences is 2,048), low enough that the
#: batch arithmetic and the per-step data loading stay quick.
MAX_TOTAL_BATCH = 2**20


class BatchsizeConfig(StrictModel):
    """How the total batch size is split over processes, devices and accumulation steps.

    Total batch size = number of processes x per-device batch size x accumulation steps. The
    engine picks the smallest accumulation that keeps the per-device batch within
    ``max_per_device_train_batch_size``, so one config runs unchanged on any number of processes.
    """

    total_train_batch_size: int = Field(ge=1, le=MAX_TOTAL_BATCH)
    """The total (effective) batch size for the training run, in sequences (at most 2**20)."""
    max_per_device_train_batch_size: int = Field(ge=1)
    """The maximum training batch size that fits on one device."""
    per_device_eval_batch_size: int | None = Field(default=None, ge=1)
    """The eval batch size per device; if not given, the resolved training batch size."""


class Overrides(StrictModel):
    """Learning-rate scaling applied once when the run starts."""

    lr_multiplier: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    """Multiplier applied to the learning rate in the training_args."""
    lr_batch_size_scaling: Literal["none", "sqrt", "linear"] = "none"
    """Scales the learning rate by a factor of the total training batch size: 'none': no
    scaling; 'sqrt': times the square root of the batch size; 'linear': times the batch size."""


class SFTArguments(StrictModel):
    """Supervised fine-tuning arguments."""

    max_seq_length: int = Field(default=2048, ge=1)
    """Maximum input sequence length in tokens; see length_handling for longer examples."""
    save_name_if_new_basemodel: FolderName = "checkpoint-new-basemodel"
    """If a PEFT run adds tokens to the vocabulary, the resized base model is saved in this
    folder inside output_dir (a plain folder name)."""
    train_on_completions_only: bool = False
    """Only compute loss on the assistant's turns (start marker, content and end marker)."""
    length_handling: Literal["filter", "truncate", "chunk"] = "filter"
    """What to do with examples longer than max_seq_length: 'filter' drops them, 'truncate'
    cuts them; either way the count is reported. 'chunk' splits them into pieces of at most
    max_seq_length tokens, each trained as an example of its own; only with
    train_on_completions_only: false (a piece may start mid-conversation, so an answer would
    be trained without its question)."""
    train_on_reasoning: bool = True
    """(ours) Train the assistant's reasoning (``reasoning_content``, rendered as
    ``<think>...</think>`` before the answer by chat-ml and simplified-llama31). False masks it
    while the answer and the tool calls stay trained."""
    drop_past_reasoning: bool = False
    """(ours) Leave the reasoning out of every assistant turn but the last, as Qwen3-style
    templates do when they render history; the masks follow what is rendered."""
    padding_free: bool = True
    """(ours) Concatenate the examples of a micro-batch into one row with position ids restarting
    at each example, so no padding is computed. False pads each batch instead."""

    @model_validator(mode="after")
    def _check_chunk(self) -> SFTArguments:
        if self.length_handling == "chunk" and self.train_on_completions_only:
            raise ValueError(
                "length_handling: chunk needs train_on_completions_only: false: a chunk may "
                "start in the middle of a conversation, so an answer would be trained without "
                "its question. Use filter or truncate, or train the whole conversation"
            )
        return self


class PretrainArguments(StrictModel):
    """Continued pretraining arguments (``sft_args`` of a ``pretrain`` config)."""

    max_seq_length: int = Field(default=2048, ge=1)
    """Maximum example length in tokens; longer documents are handled by length_handling."""
    length_handling: Literal["chunk", "filter", "truncate"] = "chunk"
    """What to do with documents longer than max_seq_length: 'chunk' splits them into pieces
    of at most max_seq_length tokens (the last one shorter), each trained as an example of its
    own; 'filter' drops them; 'truncate' keeps their start. The preflight counts them."""
    save_name_if_new_basemodel: FolderName = "checkpoint-new-basemodel"
    """If a PEFT run adds tokens to the vocabulary, the resized base model is saved in this
    folder inside output_dir (a plain folder name)."""
    padding_free: bool = True
    """(ours) Concatenate the examples of a micro-batch into one row with position ids restarting
    at each example, so no padding is computed. False pads each batch instead."""


def new_basemodel_name(sft_args: SFTArguments | PretrainArguments | None) -> str:
    """The folder a PEFT run that grew the vocabulary saves its resized base in.

    DPO has no ``sft_args``; it uses the same default as SFT.
    """
    return (sft_args or SFTArguments()).save_name_if_new_basemodel


class DPOArguments(StrictModel):
    """Direct preference optimisation arguments (ours; TRL's own are in training_args)."""

    padding_free: bool = True
    """(ours) Pack each micro-batch's chosen and rejected sequences into one row (position ids
    restarting at each sequence, attention kept inside each), so no padding is computed; the
    loss, rewards and gradients equal the padded batch's. False uses TRL's padded batches."""
