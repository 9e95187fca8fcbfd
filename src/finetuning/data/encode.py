"""Tokenising rendered conversations into input ids and labels, with the loss mask from the spans.

Each conversation is rendered once (recording its assistant spans), tokenised once with offset
mapping, and a token is trained exactly when its characters fall inside an assistant span
(``train_on_completions_only``) or, for full-sequence training, always. Nothing searches for
marker tokens afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.config.data import ChatTemplateName, HistoryRule
from finetuning.config.training import SFTArguments
from finetuning.config.training_args import training_arg_default
from finetuning.data.history import conversation_examples, refuse_unrendered, unrendered
from finetuning.data.messages import without_past_reasoning
from finetuning.data.templates import Rendered
from finetuning.errors import Problem, UserError

IGNORE = -100
CHUNK = 2000
PARALLEL_MIN_ROWS = 20_000
STORE_ARRAYS = ("input_ids", "labels", "offsets", "status", "full_lengths", "source_rows", "flags")

#: Row status codes in :class:`TokenStore` (IDENTICAL: a preference row whose chosen and
#: rejected completions are the same tokens, which DPO learns nothing from).
OK, TOO_LONG, TRUNCATED, NOTHING_TRAINED, IDENTICAL = 0, 1, 2, 3, 4
#: Example flags in :class:`TokenStore`: the conversation was trained whole (one example, every
#: assistant turn), not turn by turn; the template left out content the row carries
#: (``allow_unrendered_content``).
WHOLE, UNRENDERED = 1, 2


@dataclass(frozen=True)
class EncodeSettings:
    """Everything besides the rows and the tokenizer that shapes the encoded result.

    Attributes:
        template: The chat template.
        max_length: Longest sequence (SFT: the example; DPO: prompt + completion).
        length_handling: SFT and pretrain: "filter", "truncate" or "chunk" (kept whole here,
            cut into pieces by ``data.text.chunk_split`` once the sets are chosen).
        completions_only: SFT: train on the assistant spans only.
        max_prompt_length: DPO: longest prompt when prompt + completion is too long.
        truncation_mode: DPO: "keep_end" keeps the end of a too-long prompt, "keep_start" its start;
            reward: "drop" drops a pair that does not fit (TRL's RewardTrainer does the same).
        train_on_reasoning: SFT: train the assistant's reasoning (else it is masked).
        drop_past_reasoning: Leave out the reasoning of every assistant turn but the last.
        history_rule: keep-original: how a conversation becomes examples (``data.history``).
        allow_unrendered: keep-original: train rows whose tool calls, tools or reasoning the
            template does not render (flagged UNRENDERED) instead of refusing them.
    """

    template: ChatTemplateName
    max_length: int
    length_handling: str = SFTArguments.model_fields["length_handling"].default
    completions_only: bool = False
    max_prompt_length: int | None = None
    truncation_mode: str = training_arg_default("dpo", "truncation_mode")
    train_on_reasoning: bool = True
    drop_past_reasoning: bool = False
    history_rule: HistoryRule = HistoryRule.AUTO
    allow_unrendered: bool = False


@dataclass
class TokenStore:
    """Encoded examples as flat arrays (cheap to cache, index and share).

    One row gives one example, except for a conversation that keep-original trains turn by turn
    (``data.history``): it gives one example per trained turn, consecutive in the store, and
    ``source_rows`` says which row each example came from (mixing and splitting choose rows, so
    a conversation's examples stay on one side of the validation split).

    Attributes:
        input_ids: All token ids, row after row (int32).
        labels: Labels aligned with ``input_ids``; -100 where not trained (int32).
        offsets: Row ``i`` is ``[offsets[i], offsets[i + 1])`` (int64, length n + 1).
        status: Per row: OK, TOO_LONG (filtered, stored empty), TRUNCATED, NOTHING_TRAINED.
        full_lengths: Token length of each row before length handling.
        source_rows: The row of each example, ascending (default: one example per row).
        flags: Per example: WHOLE and UNRENDERED bits (default: WHOLE).
    """

    input_ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    status: np.ndarray
    full_lengths: np.ndarray
    source_rows: np.ndarray | None = None
    flags: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.source_rows is None:
            self.source_rows = np.arange(len(self.status), dtype=np.int64)
        if self.flags is None:
            self.flags = np.full(len(self.status), WHOLE, np.int8)

    def rows(self) -> int:
        """How many rows the examples came from."""
        return int(self.source_rows[-1]) + 1 if len(self.source_rows) else 0

    def examples_of(self, rows: np.ndarray) -> np.ndarray:
        """The example indices of ``rows`` (row indices, repeats allowed), in their order."""
        rows = np.asarray(rows, np.int64)
        first = np.searchsorted(self.source_rows, np.arange(self.rows() + 1))
        starts, counts = first[rows], first[rows + 1] - first[rows]
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(starts, counts) + within

    def __len__(self) -> int:
        return len(self.status)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[i], self.offsets[i + 1]
        return self.input_ids[start:end], self.labels[start:end]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def save(self, folder: Path) -> None:
        for name in STORE_ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name))

    @classmethod
    def load(cls, folder: Path) -> TokenStore:
        return cls(*(np.load(folder / f"{name}.npy", mmap_mode="r") for name in STORE_ARRAYS))

    @staticmethod
    def concat(parts: list[TokenStore]) -> TokenStore:
        shifts = np.cumsum([0] + [len(p.input_ids) for p in parts[:-1]])
        row_shifts = np.cumsum([0] + [p.rows() for p in parts[:-1]])
        return TokenStore(
            np.concatenate([p.input_ids for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate(
                [[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts, strict=True)]
            ).astype(np.int64),
            np.concatenate([p.status for p in parts]),
            np.concatenate([p.full_lengths for p in parts]),
            np.concatenate(
                [p.source_rows + r for p, r in zip(parts, row_shifts, strict=True)]
            ).astype(np.int64),
            np.concatenate([p.flags for p in parts]),
        )


def template_refused(row: dict[str, Any], exc: Exception) -> str:
    """The message for a row the tokenizer's own chat template raised on (keep-original)."""
    roles = [m.get("role") for m in row.get("messages") or row.get("prompt_messages") or []]
    return (
        f"{row.get('_where', 'a row')}: the tokenizer's chat template (keep-original) refused "
        f"this conversation: {exc} (its roles: {', '.join(map(str, roles))}). Fix the row, or "
        "choose a named template that accepts it (chat-ml, ...)"
    )


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer adds before a text when encoding with special tokens (e.g. BOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return full[:i]
    return []


def needs_special_prefix(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` still needs the tokenizer's special prefix (BOS) when encoded.

    Our templates may write BOS themselves; a text that already starts with it must not get a
    second one. Training (SFT and DPO) and generation all follow this one rule.
    """
    bos = tokenizer.bos_token
    return not (bos and text.startswith(bos))


#: At most this many located problems are listed when rows cannot be encoded.
MAX_REPORTED = 20


def encode_each(
    rows: list[dict[str, Any]], encode_row: Callable[[dict[str, Any]], Any], what: str
) -> list[Any]:
    """``encode_row`` applied to every row, with every located problem collected first.

    The one loop the encoders share (chat, preference, unpaired, prompt): a row the template
    cannot render, or whose completion does not continue its prompt cleanly, becomes a problem
    naming the row (``file:line``); all of them are reported together (up to
    :data:`MAX_REPORTED`) instead of stopping at the first.

    Args:
        rows: The rows, each with ``_where`` (``file:line``) where the reader set it.
        encode_row: Renders (and may tokenise) one row. It raises ``ValueError``
            (``TemplateMismatch``, ``UnsupportedRow``, a failed continuation check) or Jinja's
            ``TemplateError`` (keep-original: the template refused the row) for a bad row;
            anything else is not the row's fault and propagates.
        what: The kind of row for the header ("preference" gives "preference rows that cannot
            be encoded:").

    Returns:
        ``encode_row``'s results, aligned with ``rows``.

    Raises:
        UserError: One problem per bad row, each naming its row.
    """
    from jinja2 import TemplateError

    results, problems = [], []
    for row in rows:
        try:
            results.append(encode_row(row))
        except TemplateError as exc:  # keep-original: the template itself refused the row
            problems.append(Problem(template_refused(row, exc)))
        except ValueError as exc:
            problems.append(Problem(str(exc), row.get("_where", "")))
    if problems:
        raise UserError(problems[:MAX_REPORTED], header=f"{what} rows that cannot be encoded:")
    return results


def encode_chunk(
    rows: list[dict[str, Any]], tokenizer: Any, settings: EncodeSettings
) -> TokenStore:
    """Encode SFT rows (``messages``) into a :class:`TokenStore`."""

    def render_row(row: dict[str, Any]) -> tuple[list[Rendered], int]:
        messages, tools = row["messages"], row.get("tools")
        if settings.drop_past_reasoning:
            messages = without_past_reasoning(messages)
        examples, whole = conversation_examples(
            settings.template, messages, tokenizer, tools, settings.history_rule
        )
        flags = WHOLE if whole else 0
        if settings.template == ChatTemplateName.KEEP_ORIGINAL:
            missing = unrendered(messages, tools, examples, whole)
            if missing and not settings.allow_unrendered:
                refuse_unrendered(missing)
            flags |= UNRENDERED if missing else 0
        return examples, flags

    rendered, source_rows, flags = [], [], []
    for r, (examples, row_flags) in enumerate(encode_each(rows, render_row, "chat")):
        rendered += examples
        source_rows += [r] * len(examples)
        flags += [row_flags] * len(examples)
    texts = [r.text for r in rendered]
    spans = [r.spans for r in rendered]
    reasoning = [() if settings.train_on_reasoning else r.reasoning for r in rendered]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    prefix = special_prefix(tokenizer)
    ids_out, labels_out, status, full_lengths = [], [], [], []
    for text, row_spans, masked, ids, offs in zip(
        texts, spans, reasoning, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        ids = np.asarray(ids, dtype=np.int32)
        offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        nonempty = offs[:, 1] > offs[:, 0]
        if settings.completions_only:
            trained = np.zeros(len(ids), dtype=bool)
            for s, e in row_spans:
                trained |= nonempty & (offs[:, 0] < e) & (offs[:, 1] > s)
        else:
            trained = np.ones(len(ids), dtype=bool)
        for s, e in masked:  # reasoning that is not trained (train_on_reasoning: false)
            trained &= ~(nonempty & (offs[:, 0] < e) & (offs[:, 1] > s))
        # No doubled BOS: only add the tokenizer's prefix when the template did not write it.
        if prefix and needs_special_prefix(tokenizer, text):
            ids = np.concatenate([np.asarray(prefix, dtype=np.int32), ids])
            trained = np.concatenate([np.full(len(prefix), not settings.completions_only), trained])
        labels = np.where(trained, ids, IGNORE).astype(np.int32)
        full_lengths.append(len(ids))
        code = OK
        if len(ids) > settings.max_length and settings.length_handling != "chunk":
            if settings.length_handling == "filter":
                ids, labels, code = ids[:0], labels[:0], TOO_LONG
            else:
                ids, labels, code = (
                    ids[: settings.max_length],
                    labels[: settings.max_length],
                    TRUNCATED,
                )
        if code != TOO_LONG and not (labels != IGNORE).any():
            code = NOTHING_TRAINED
        ids_out.append(ids)
        labels_out.append(labels)
        status.append(code)
    lengths = [len(x) for x in ids_out]
    return TokenStore(
        np.concatenate(ids_out) if ids_out else np.zeros(0, np.int32),
        np.concatenate(labels_out) if labels_out else np.zeros(0, np.int32),
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        np.asarray(status, dtype=np.int8),
        np.asarray(full_lengths, dtype=np.int64),
        np.asarray(source_rows, dtype=np.int64),
        np.asarray(flags, dtype=np.int8),
    )


_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_TOKENIZER = tokenizer


def _encode_in_worker(args: tuple[Callable, list[dict[str, Any]], EncodeSettings]) -> Any:
    encode, rows, settings = args
    return encode(rows, _WORKER_TOKENIZER, settings)


def encode_rows(
    rows: list[dict[str, Any]],
    tokenizer: Any,
    settings: EncodeSettings,
    num_workers: int = 1,
    progress: bool = True,
    encode: Callable[[list[dict[str, Any]], Any, EncodeSettings], Any] = encode_chunk,
) -> Any:
    """Encode all rows with ``encode`` (SFT by default), in chunks, on ``num_workers`` processes."""
    from tqdm.auto import tqdm

    chunks = [rows[i : i + CHUNK] for i in range(0, len(rows), CHUNK)]
    bar = tqdm(
        total=len(rows),
        desc="tokenizing",
        unit="rows",
        disable=not progress or len(rows) < 5 * CHUNK,
    )
    parts: list[Any] = []
    # Starting worker processes costs seconds (each imports the tokenizer stack): only worth it
    # for large inputs.
    if num_workers <= 1 or len(rows) < PARALLEL_MIN_ROWS:
        for chunk in chunks:
            parts.append(encode(chunk, tokenizer, settings))
            bar.update(len(chunk))
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            num_workers, mp_context=context, initializer=_init_worker, initargs=(tokenizer,)
        ) as pool:
            try:
                for chunk, part in zip(
                    chunks,
                    pool.map(_encode_in_worker, [(encode, c, settings) for c in chunks]),
                    strict=True,
                ):
                    parts.append(part)
                    bar.update(len(chunk))
            except BaseException:
                # A bad row or a signal: drop the queued chunks instead of encoding them all.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    bar.close()
    return type(parts[0]).concat(parts)
