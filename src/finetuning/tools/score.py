"""`finetuning score`: score conversations with a trained reward model (JSONL in, JSONL out).

Input rows are either conversations, ``{"messages": [...]}`` (each gets one ``score``), or
preference rows, ``{"prompt_messages", "chosen_messages", "rejected_messages"}`` (each gets a
``chosen_score`` and a ``rejected_score``, and the tool reports how often chosen scored above
rejected). Every output row is the input row with its scores added. A conversation is encoded
as the reward run encoded it: rendered with the run's chat template (``data_conf.chat_template_name``
of the run's ``resolved_config.yaml`` beside the model or adapter folder; without one, the saved
tokenizer's own template), up to the end marker of its last assistant turn; the score is the
model's output at its last token.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from finetuning.config.data import ChatTemplateName
from finetuning.data.preference import conversation_ids
from finetuning.data.rows import read_rows
from finetuning.errors import UserError
from finetuning.tools.generate import _check_outputs, _check_positive
from finetuning.tools.inference import RESOLVED_CONFIG, load_for_inference
from finetuning.train.safety.writes import atomic_writer

logger = logging.getLogger(__name__)

PAIR_KEYS = ("chosen_messages", "rejected_messages")


def run_template(model: str, adapter: str | None) -> ChatTemplateName:
    """The chat template the run trained with, from its ``resolved_config.yaml``.

    The run folder is the one holding the adapter (or the model) folder; without a readable
    config there, keep-original (the saved tokenizer's template, which our runs store).
    """
    import yaml

    run_dir = Path(adapter or model).resolve().parent
    path = run_dir / RESOLVED_CONFIG
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return ChatTemplateName(data["data_conf"]["chat_template_name"])
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, ValueError):
        logger.info("no run config in %s: rendering with the tokenizer's own template", run_dir)
        return ChatTemplateName.KEEP_ORIGINAL


def _tensor_names(folder: Path) -> set[str] | None:
    """The tensor names of a local folder's safetensors weights (None: none to read)."""
    if not folder.is_dir():
        return None
    names: set[str] = set()
    try:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            return set(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        for path in sorted(folder.glob("*.safetensors")):
            with path.open("rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            names |= {k for k in header if k != "__metadata__"}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged file: loading names it (check_weight_files)
    return names or None


def _architectures(folder: Path) -> list[str]:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return [str(a) for a in data.get("architectures") or []]
    except (OSError, ValueError, AttributeError):
        return []


def check_score_head(model: str, adapter: str | None) -> None:
    """Refuse a model whose score head was never trained (checked before anything loads).

    Loaded as a sequence classifier, a checkpoint without ``score`` weights gets a new, randomly
    initialised head: every score is noise, and different on every run. The head must be in
    the adapter (a LoRA reward run saves it there) or, without one, in the model's weights (a
    full reward run's ``checkpoint-final``). Hub ids and folders without safetensors weights
    are not checked.

    Raises:
        UserError: The adapter or the model has no score weights (a causal LM, for instance).
    """
    source = Path(adapter or model)
    names = _tensor_names(source)
    if names is None or any(".score." in f".{name}" for name in names):
        return
    if adapter:
        raise UserError(
            f"--adapter {adapter}: the adapter has no score head (no `score` weights), so the "
            "scores would come from a randomly initialised head: give the adapter of a "
            "`finetuning reward` run (its checkpoint-final)"
        )
    kind = ", ".join(_architectures(source)) or "no sequence classifier"
    hint = (
        "; if it is the base of a LoRA reward run, add --adapter with that run's checkpoint-final"
        if any(a.endswith("ForCausalLM") for a in _architectures(source))
        else ""
    )
    raise UserError(
        f"--model {model}: has no trained score head (no `score` weights; it is {kind}), so the "
        "scores would come from a randomly initialised head, different on every run: give a "
        f"`finetuning reward` run's checkpoint-final{hint}"
    )


def read_conversations(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of ``path``, checked as reward data (pairs) or as SFT conversations.

    Returns:
        The rows and whether they are preference pairs (decided by the first row).

    Raises:
        UserError: Missing file, malformed rows (named by line, with the expected shape).
    """
    from finetuning.data.rows import read_records

    records = read_records(path, "--input")
    first = next((r for _, r in records if isinstance(r, dict)), {})
    pairs = "prompt_messages" in first or "chosen_messages" in first
    return read_rows(path, "reward" if pairs else "sft", "--input"), pairs


def score_ids(model: Any, sequences: list[list[int]], pad_id: int, batch_size: int) -> list[float]:
    """The model's score of each token sequence (right-padded batches, as training batched)."""
    import torch

    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        batch = sequences[start : start + batch_size]
        longest = max(len(s) for s in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
            ).logits
        scores += logits[:, 0].float().cpu().tolist()
    return scores


def score_rows(
    model: Any,
    tokenizer: Any,
    template: ChatTemplateName,
    rows: list[dict[str, Any]],
    pairs: bool,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """The rows with their scores (``score``, or ``chosen_score`` / ``rejected_score``)."""
    conversations = []
    for row in rows:
        tools = row.get("tools")
        if pairs:
            conversations += [
                conversation_ids(template, row["prompt_messages"] + row[k], tokenizer, tools)
                for k in PAIR_KEYS
            ]
        else:
            conversations.append(conversation_ids(template, row["messages"], tokenizer, tools))
    scores = score_ids(
        model, [c.tolist() for c in conversations], tokenizer.pad_token_id, batch_size
    )
    out = []
    for i, row in enumerate(rows):
        record = {k: v for k, v in row.items() if not k.startswith("_")}
        if pairs:
            record["chosen_score"], record["rejected_score"] = scores[2 * i], scores[2 * i + 1]
        else:
            record["score"] = scores[i]
        out.append(record)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`finetuning score --model M [--adapter A] --input IN.jsonl --output OUT.jsonl`."""
    parser.add_argument(
        "--model",
        required=True,
        help="the reward model (a full run's checkpoint-final, or the base with --adapter)",
    )
    parser.add_argument("--adapter", default=None, help="adapter path (a LoRA reward run)")
    parser.add_argument(
        "--tokenizer", default=None, help="tokenizer path (default: adapter's or model's)"
    )
    parser.add_argument(
        "--input",
        type=Path,
        required=True,
        help="JSONL of conversations (messages) or preference rows (prompt/chosen/rejected)",
    )
    parser.add_argument("--output", type=Path, required=True, help="JSONL of scored rows")
    parser.add_argument("--batch-size", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    """Score the rows of ``--input`` and write them with their scores to ``--output``."""
    _check_positive(batch_size=args.batch_size)
    _check_outputs([args.input], args.output)
    rows, pairs = read_conversations(args.input)  # all checked before the output is touched
    check_score_head(args.model, args.adapter)
    model, tokenizer = load_for_inference(args.model, args.adapter, args.tokenizer, score_head=True)
    if model.config.pad_token_id is None:  # batches are right-padded: the model must see it
        model.config.pad_token_id = tokenizer.pad_token_id
    template = run_template(args.model, args.adapter)
    scored = score_rows(model, tokenizer, template, rows, pairs, args.batch_size)
    with atomic_writer(args.output) as out:
        out.writelines(json.dumps(r) + "\n" for r in scored)
    if pairs:
        above = sum(r["chosen_score"] > r["rejected_score"] for r in scored)
        print(
            f"wrote {len(scored)} scored pairs to {args.output}; chosen above rejected in "
            f"{above} of {len(scored)} ({above / len(scored):.1%})",
            file=sys.stderr,
        )
    else:
        print(f"wrote {len(scored)} scores to {args.output}", file=sys.stderr)
    return 0
