"""Unpaired feedback rows (KTO): a prompt, one completion, and whether it is desirable.

A row is ``{"prompt_messages": [...], "completion_messages": [...], "label": true|false}``. A
preference row (``prompt_messages``/``chosen_messages``/``rejected_messages``) is accepted too and
unpaired into one desirable example (the chosen completion) and one undesirable one (the
rejected), as TRL's ``unpair_preference_dataset`` does.

The encoding is the preference rows' (:mod:`finetuning.data.preference`): the prompt is the
rendered prompt messages with the generation prompt, the completion is what the full
conversation adds after it up to the end marker of its last assistant turn, checked to tokenise
as a clean continuation of the prompt. Too-long examples are cut as for DPO: the prompt to
``max_prompt_length`` (its end kept for ``keep_end``), then the completion to what is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.data.encode import (
    IDENTICAL,
    IGNORE,
    OK,
    TOO_LONG,
    TRUNCATED,
    EncodeSettings,
    TokenStore,
    encode_each,
    special_prefix,
)
from finetuning.data.messages import check_messages
from finetuning.data.preference import _completion, _store, rendered_prompt

KEYS = ("prompt_messages", "completion_messages", "label")
PAIRED_KEYS = ("prompt_messages", "chosen_messages", "rejected_messages")
#: Marks an example that came from a preference row (for the preflight's count).
FROM_PAIR = "_unpaired_from"
#: Marks both examples of a preference row whose chosen and rejected completions are the same.
SAME_PAIR = "_unpaired_identical"


def is_paired(record: dict[str, Any]) -> bool:
    """Whether ``record`` is a preference row (to be unpaired) rather than an unpaired one."""
    return all(k in record for k in PAIRED_KEYS) and "completion_messages" not in record


def check_row(record: dict[str, Any]) -> str:
    """An empty string for a good unpaired row, else what is wrong with it.

    Preference rows are checked by the caller as preference rows (see :func:`is_paired`).
    """
    missing = [k for k in KEYS if k not in record]
    if missing:
        return (
            f"missing `{'`, `'.join(missing)}`; a kto row has `prompt_messages`, "
            "`completion_messages` and `label` (true: desirable, false: undesirable), or is a "
            "preference row with `prompt_messages`, `chosen_messages` and `rejected_messages`"
        )
    if not isinstance(record["label"], bool):
        return f"`label` must be true (desirable) or false (undesirable), got {record['label']!r}"
    for key in ("prompt_messages", "completion_messages"):
        message = check_messages(record[key], key, allow_empty=key == "prompt_messages")
        if message:
            return message
    if record["completion_messages"][-1]["role"] != "assistant":
        return "`completion_messages` must end with an assistant message"
    return ""


def unpair(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One desirable and one undesirable example from a preference row (TRL's unpairing).

    A row whose chosen and rejected completions are the same messages would train the same
    completion as desirable and undesirable at once: both examples are marked
    (:data:`SAME_PAIR`), encoded with the status ``IDENTICAL`` and dropped like the identical
    pairs of DPO, ORPO, SimPO and reward rows (counted; an error when every row is one).
    """
    shared = {k: v for k, v in record.items() if k not in PAIRED_KEYS}
    same = record["chosen_messages"] == record["rejected_messages"]
    return [
        {
            **shared,
            "prompt_messages": record["prompt_messages"],
            "completion_messages": record[key],
            "label": label,
            FROM_PAIR: True,
            **({SAME_PAIR: True} if same else {}),
        }
        for key, label in (("chosen_messages", True), ("rejected_messages", False))
    ]


@dataclass
class UnpairedStore:
    """Encoded unpaired examples: prompt and completion token stores, labels and statuses.

    Attributes:
        prompt: Prompt ids per example (labels unused).
        completion: Completion ids per example (labels = the ids).
        label: True for a desirable example, False for an undesirable one.
        status: Per example: OK, TRUNCATED, TOO_LONG (the prompt alone fills max_length: dropped).
        full_lengths: Prompt + completion, before truncation.
    """

    prompt: TokenStore
    completion: TokenStore
    label: np.ndarray
    status: np.ndarray
    full_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.status)

    def lengths(self) -> np.ndarray:
        return self.prompt.lengths() + self.completion.lengths()

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Prompt + completion ids, and labels with the prompt masked (for the preflight)."""
        prompt, _ = self.prompt.row(i)
        completion, labels = self.completion.row(i)
        return (
            np.concatenate([prompt, completion]),
            np.concatenate([np.full(len(prompt), IGNORE, labels.dtype), labels]),
        )

    def example(self, i: int) -> dict[str, Any]:
        """What TRL's KTO collator reads: ``prompt_ids``, ``completion_ids``, ``label``."""
        return {
            "prompt_ids": self.prompt.row(i)[0].tolist(),
            "completion_ids": self.completion.row(i)[0].tolist(),
            "label": bool(self.label[i]),
        }

    def save(self, folder: Path) -> None:
        for part in ("prompt", "completion"):
            (folder / part).mkdir()
            getattr(self, part).save(folder / part)
        np.save(folder / "label.npy", self.label)
        np.save(folder / "status.npy", self.status)
        np.save(folder / "full_lengths.npy", self.full_lengths)

    @classmethod
    def load(cls, folder: Path) -> UnpairedStore:
        return cls(
            TokenStore.load(folder / "prompt"),
            TokenStore.load(folder / "completion"),
            *(np.load(folder / f"{name}.npy") for name in ("label", "status", "full_lengths")),
        )

    @staticmethod
    def concat(parts: list[UnpairedStore]) -> UnpairedStore:
        return UnpairedStore(
            TokenStore.concat([p.prompt for p in parts]),
            TokenStore.concat([p.completion for p in parts]),
            *(np.concatenate([getattr(p, n) for p in parts]) for n in ("label", "status")),
            np.concatenate([p.full_lengths for p in parts]),
        )


def _truncate(
    prompt_ids: np.ndarray, completion: np.ndarray, settings: EncodeSettings
) -> tuple[int, np.ndarray, np.ndarray]:
    """(status, prompt, completion) after cutting to ``max_length`` as for DPO."""
    if len(prompt_ids) + len(completion) <= settings.max_length:
        return OK, prompt_ids, completion
    keep = settings.max_prompt_length or len(prompt_ids)
    if len(prompt_ids) > keep:
        prompt_ids = (
            prompt_ids[-keep:] if settings.truncation_mode == "keep_end" else prompt_ids[:keep]
        )
    room = settings.max_length - len(prompt_ids)
    if room <= 0:
        return TOO_LONG, prompt_ids[:0], completion[:0]
    return TRUNCATED, prompt_ids, completion[:room]


def encode_unpaired_chunk(
    rows: list[dict[str, Any]], tokenizer: Any, settings: EncodeSettings
) -> UnpairedStore:
    """Encode unpaired examples (preference rows already unpaired by the reader).

    Raises:
        UserError: Rows whose completion does not continue the prompt cleanly, or that the
            template cannot render (up to 20, each naming its row).
    """
    prefix = special_prefix(tokenizer)

    def encode_row(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        prompt, prompt_ids = rendered_prompt(row, tokenizer, settings, prefix)
        shown = (prompt.text, prompt_ids)
        return prompt_ids, _completion(
            row, "completion_messages", tokenizer, settings, shown, prefix
        )

    prompts, completions, labels, status, full_lengths = [], [], [], [], []
    encoded = encode_each(rows, encode_row, "kto")
    for row, (prompt_ids, completion) in zip(rows, encoded, strict=True):
        full_lengths.append(len(prompt_ids) + len(completion))
        code, prompt_ids, completion = _truncate(prompt_ids, completion, settings)
        status.append(IDENTICAL if row.get(SAME_PAIR) and code != TOO_LONG else code)
        prompts.append(prompt_ids)
        completions.append(completion)
        labels.append(bool(row["label"]))
    return UnpairedStore(
        _store(prompts, labelled=False),
        _store(completions, labelled=True),
        np.asarray(labels, bool),
        np.asarray(status, np.int8),
        np.asarray(full_lengths, np.int64),
    )


def desirable_counts(split: Any) -> tuple[int, int]:
    """(desirable, undesirable) examples in an ``EncodedSplit`` of an :class:`UnpairedStore`."""
    labels = np.asarray(split.store.label)[split.indices]
    desirable = int(labels.sum())
    return desirable, len(labels) - desirable


#: TRL's bounds on desirable_weight * n_desirable / (undesirable_weight * n_undesirable), from
#: Eq. (8) of the KTO paper: TRL 1.16, trl/trainer/kto_trainer.py, KTOTrainer._prepare_dataset
#: ("Calculate dataset desirability balance", lines 1158-1183), which uses 1.33 for 4/3.
BALANCE_RANGE = (1.0, 1.33)


def balance_lines(
    desirable: int, undesirable: int, desirable_weight: float, undesirable_weight: float
) -> tuple[list[str], list[str]]:
    """The preflight's lines and warnings on the desirable/undesirable balance.

    The rule (TRL's, see :data:`BALANCE_RANGE`): with unequal counts, the weights should make
    ``desirable_weight * desirable / (undesirable_weight * undesirable)`` fall in [1, 1.33];
    TRL recommends either ``desirable_weight`` in
    [undesirable * undesirable_weight / desirable, that x 1.33] or ``undesirable_weight`` in
    [desirable * desirable_weight / undesirable / 1.33, desirable * desirable_weight /
    undesirable] (not both). TRL counts at least one of each.
    """
    lines = [
        f"kto examples: {desirable} desirable, {undesirable} undesirable; desirable_weight "
        f"{desirable_weight:g}, undesirable_weight {undesirable_weight:g}"
    ]
    warnings: list[str] = []
    n_d, n_u = max(desirable, 1), max(undesirable, 1)
    low, high = BALANCE_RANGE
    if desirable_weight <= 0 or undesirable_weight <= 0:  # the config refuses these; say why
        warnings.append(
            f"desirable_weight {desirable_weight:g} / undesirable_weight {undesirable_weight:g}: "
            "KTO's weights must be > 0, so no balance can be computed"
        )
        return lines, warnings
    des = (
        round(n_u * undesirable_weight / n_d * low, 2),
        round(n_u * undesirable_weight / n_d * high, 2),
    )
    und = (
        round(n_d * desirable_weight / n_u / high, 2),
        round(n_d * desirable_weight / n_u / low, 2),
    )
    ratio = desirable_weight * n_d / (undesirable_weight * n_u)
    lines.append(
        f"kto balance: desirable_weight x desirable / (undesirable_weight x undesirable) = "
        f"{ratio:.3g} (TRL recommends {low:g} to {high:g}: desirable_weight in "
        f"[{des[0]:g}, {des[1]:g}] or undesirable_weight in [{und[0]:g}, {und[1]:g}], not both)"
    )
    in_range = des[0] <= desirable_weight <= des[1] or und[0] <= undesirable_weight <= und[1]
    if desirable != undesirable and not in_range:
        warnings.append(
            f"the kto weights do not balance {desirable} desirable against {undesirable} "
            f"undesirable examples: set training_args.desirable_weight in [{des[0]:g}, "
            f"{des[1]:g}] or training_args.undesirable_weight in [{und[0]:g}, {und[1]:g}]"
        )
    if not desirable or not undesirable:
        warnings.append(
            f"the kto training data has {desirable} desirable and {undesirable} undesirable "
            "examples: KTO needs both kinds"
        )
    return lines, warnings
