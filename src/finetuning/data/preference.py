"""Preference rows (DPO): prompt, chosen and rejected token ids from our own templates.

The prompt is the rendered prompt messages with the generation prompt; each completion is what
the full conversation (prompt + chosen, or prompt + rejected) adds after it, up to the end marker
of its last assistant turn. Both are tokenised as the full conversation and checked to be a clean
continuation: the full conversation's tokens must start with exactly the prompt's tokens. A row
where they do not is an error naming the row, never a silently shifted completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.config.data import ChatTemplateName
from finetuning.data.encode import (
    IDENTICAL,
    IGNORE,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    TokenStore,
    encode_each,
    needs_special_prefix,
    special_prefix,
)
from finetuning.data.history import missing_tools, refuse_unrendered, turn_example, unrendered
from finetuning.data.templates import render, render_original

PARTS = ("prompt", "chosen", "rejected")


@dataclass
class PreferenceStore:
    """Encoded preference rows: three aligned token stores and a status per row.

    Attributes:
        prompt: Prompt ids per row (labels unused).
        chosen: Chosen completion ids per row (labels = the ids).
        rejected: Rejected completion ids per row.
        status: Per row: OK, TRUNCATED (prompt or completions cut), TOO_LONG (prompt alone fills
            max_length: dropped), IDENTICAL (chosen and rejected are the same tokens: dropped).
        full_lengths: Prompt + longer completion, before truncation.
    """

    prompt: TokenStore
    chosen: TokenStore
    rejected: TokenStore
    status: np.ndarray
    full_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def lengths(self) -> np.ndarray:
        return self.prompt.lengths() + np.maximum(self.chosen.lengths(), self.rejected.lengths())

    def triple(self, i: int) -> dict[str, list[int]]:
        return {f"{part}_ids": getattr(self, part).row(i)[0].tolist() for part in PARTS}

    def save(self, folder: Path) -> None:
        for part in PARTS:
            (folder / part).mkdir()
            getattr(self, part).save(folder / part)
        np.save(folder / "status.npy", self.status)
        np.save(folder / "full_lengths.npy", self.full_lengths)

    @classmethod
    def load(cls, folder: Path) -> PreferenceStore:
        parts = [TokenStore.load(folder / part) for part in PARTS]
        return cls(*parts, np.load(folder / "status.npy"), np.load(folder / "full_lengths.npy"))

    @staticmethod
    def concat(parts: list[PreferenceStore]) -> PreferenceStore:
        return PreferenceStore(
            *(TokenStore.concat([getattr(p, part) for p in parts]) for part in PARTS),
            np.concatenate([p.status for p in parts]),
            np.concatenate([p.full_lengths for p in parts]),
        )


def _store(seqs: list[np.ndarray], labelled: bool) -> TokenStore:
    lengths = [len(s) for s in seqs]
    ids = np.concatenate(seqs).astype(np.int32) if seqs else np.zeros(0, np.int32)
    return TokenStore(
        ids,
        ids.copy() if labelled else np.full(len(ids), IGNORE, np.int32),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.zeros(len(seqs), np.int8),
        np.asarray(lengths, np.int64),
    )


def _tokens(tokenizer: Any, text: str, prefix: list[int]) -> tuple[np.ndarray, np.ndarray]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], np.int64)
    offsets = np.asarray(enc["offset_mapping"], np.int64).reshape(-1, 2)
    if prefix and needs_special_prefix(tokenizer, text):
        ids = np.concatenate([np.asarray(prefix, np.int64), ids])
        offsets = np.concatenate([np.zeros((len(prefix), 2), np.int64), offsets])
    return ids, offsets


def rendered_prompt(
    row: dict[str, Any], tokenizer: Any, settings: EncodeSettings, prefix: list[int]
) -> tuple[Any, np.ndarray]:
    """A row's ``prompt_messages`` rendered with the generation prompt, and its token ids."""
    tools, messages = row.get("tools"), row["prompt_messages"]
    if settings.template == ChatTemplateName.KEEP_ORIGINAL:
        # Only the text matters here: a template that rewrites history renders the prompt as
        # the model gets it, whatever earlier turns looked like when they were generated.
        prompt = render_original(messages, tokenizer, True, tools, strict=False)
        if missing_tools(prompt.text, tools) and not settings.allow_unrendered:
            refuse_unrendered(["`tools`"])
    else:
        prompt = render(settings.template, messages, tokenizer, True, tools=tools)
    return prompt, _tokens(tokenizer, prompt.text, prefix)[0]


def _completion(
    row: dict[str, Any], key: str, tokenizer: Any, settings: EncodeSettings, prompt: tuple, prefix
) -> np.ndarray:
    prompt_text, prompt_ids = prompt
    messages, tools = row["prompt_messages"] + row[key], row.get("tools")
    if (
        settings.template == ChatTemplateName.KEEP_ORIGINAL
        and row["prompt_messages"]
        and (len(row[key]) == 1)
    ):
        # The completion as the model generates it after this prompt, also where the template
        # rewrites history or pre-fills the generation prompt (data.history).
        full = turn_example(messages, len(messages) - 1, tokenizer, tools)
        missing = unrendered(messages, tools, [full], whole=False)
        if missing and not settings.allow_unrendered:
            refuse_unrendered(missing)
    else:
        full = render(settings.template, messages, tokenizer, tools=tools)
    if not full.text.startswith(prompt_text):
        raise ValueError(f"the template renders the prompt differently once `{key}` follows it")
    ids, offsets = _tokens(tokenizer, full.text, prefix)
    n = len(prompt_ids)
    if len(ids) < n or not np.array_equal(ids[:n], prompt_ids):
        raise ValueError(
            f"prompt + `{key}` does not tokenise as a clean continuation of the prompt "
            "(tokens merge across the boundary)"
        )
    # The completion ends with the end marker of its last assistant turn.
    end = full.spans[-1][1] if full.spans else len(full.text)
    keep = offsets[n:, 0] < end
    return ids[n:][keep]


def encode_preference_chunk(
    rows: list[dict[str, Any]], tokenizer: Any, settings: EncodeSettings
) -> PreferenceStore:
    """Encode DPO rows, truncating as the established engine did.

    When prompt + the longer completion exceed ``max_length``, the prompt is cut to
    ``max_prompt_length`` (its end kept for ``truncation_mode: keep_end``, its start for
    ``keep_start``), then the completions to what is left. A prompt that alone fills
    ``max_length`` drops the row.
    """
    prefix = special_prefix(tokenizer)

    def encode_row(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompt, prompt_ids = rendered_prompt(row, tokenizer, settings, prefix)
        shown = (prompt.text, prompt_ids)
        chosen = _completion(row, "chosen_messages", tokenizer, settings, shown, prefix)
        rejected = _completion(row, "rejected_messages", tokenizer, settings, shown, prefix)
        return prompt_ids, chosen, rejected

    seqs: dict[str, list[np.ndarray]] = {part: [] for part in PARTS}
    status, full_lengths = [], []
    for prompt_ids, chosen, rejected in encode_each(rows, encode_row, "preference"):
        longest = max(len(chosen), len(rejected))
        full_lengths.append(len(prompt_ids) + longest)
        code = OK
        if len(prompt_ids) + longest > settings.max_length and settings.truncation_mode == "drop":
            code, prompt_ids, chosen, rejected = TOO_LONG, prompt_ids[:0], chosen[:0], rejected[:0]
        elif len(prompt_ids) + longest > settings.max_length:
            code = TRUNCATED
            keep = settings.max_prompt_length or len(prompt_ids)
            if len(prompt_ids) > keep:
                prompt_ids = (
                    prompt_ids[-keep:]
                    if settings.truncation_mode == "keep_end"
                    else prompt_ids[:keep]
                )
            room = settings.max_length - len(prompt_ids)
            if room <= 0:
                code, prompt_ids, chosen, rejected = (
                    TOO_LONG,
                    prompt_ids[:0],
                    chosen[:0],
                    rejected[:0],
                )
            else:
                chosen, rejected = chosen[:room], rejected[:room]
        # Identical completions (as written, or once tokenised and truncated) give DPO no
        # signal: the loss stays at log 2 with margin 0.
        if code != TOO_LONG and np.array_equal(chosen, rejected):
            code = IDENTICAL
        status.append(code)
        for part, seq in zip(PARTS, (prompt_ids, chosen, rejected), strict=True):
            seqs[part].append(seq)
    return PreferenceStore(
        _store(seqs["prompt"], labelled=False),
        _store(seqs["chosen"], labelled=True),
        _store(seqs["rejected"], labelled=True),
        np.asarray(status, np.int8),
        np.asarray(full_lengths, np.int64),
    )


def conversation_ids(
    template: Any, messages: list[dict[str, Any]], tokenizer: Any, tools: list | None = None
) -> np.ndarray:
    """The token ids of a whole conversation, as preference training sees prompt + completion.

    The rendered conversation up to the end marker of its last assistant turn, with the
    tokenizer's special prefix (BOS) unless the template wrote it: for a preference row,
    ``prompt_messages + chosen_messages`` gives exactly its ``prompt_ids + chosen_ids`` (the
    continuation is checked to be clean when the row is encoded). What a reward model scores.
    """
    full = render(template, messages, tokenizer, tools=tools)
    ids, offsets = _tokens(tokenizer, full.text, special_prefix(tokenizer))
    end = full.spans[-1][1] if full.spans else len(full.text)
    # The prefix (zero offsets) stays; text tokens go up to the end marker.
    return ids[(offsets[:, 0] < end) | (offsets[:, 1] == 0)]
