"""`replace_tokens TOKENIZER OUTPATH --from A --to B ...`: rename tokens, keeping their ids.

Renaming a model's unused reserved tokens to what a chat template needs (e.g.
``<|reserved_special_token_0|>`` to ``<|im_start|>``) lets the template work without new
embedding rows, which matters where the vocabulary cannot grow (QLoRA: the quantized base cannot
be resized). The edit is made on the ``tokenizer.json`` data with the ``tokenizers`` library: the
model vocabulary, the added tokens, the post-processor's special tokens, and the special-token
names in ``tokenizer_config.json``. Every id stays the same.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from finetuning.errors import UserError

logger = logging.getLogger(__name__)

#: Files written from the edited data; every other file of the tokenizer folder is copied.
EDITED = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _renamed(value: Any, mapping: dict[str, str], skip: tuple[str, ...] = ()) -> Any:
    """``value`` with every string (and dict key) equal to a ``mapping`` key renamed."""
    if isinstance(value, str):
        return mapping.get(value, value)
    if isinstance(value, list):
        return [_renamed(v, mapping, skip) for v in value]
    if isinstance(value, dict):
        return {
            mapping.get(k, k): v if k in skip else _renamed(v, mapping, skip)
            for k, v in value.items()
        }
    return value


def _vocabulary(data: dict[str, Any]) -> set[str]:
    vocab = data["model"].get("vocab") or {}
    names = {piece for piece, _ in vocab} if isinstance(vocab, list) else set(vocab)
    return names | {t["content"] for t in data.get("added_tokens") or []}


def _merged(data: dict[str, Any]) -> set[str]:
    """Tokens the BPE merges use or produce (renaming them would break the merges)."""
    used: set[str] = set()
    for merge in data["model"].get("merges") or []:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        used.update((a, b, a + b))
    return used


def _check(data: dict[str, Any], mapping: dict[str, str]) -> None:
    vocab, merged = _vocabulary(data), _merged(data)
    problems = []
    for old, new in mapping.items():
        if old not in vocab:
            problems.append(f"--from {old!r} is not a token of this tokenizer")
        elif old in merged:
            problems.append(
                f"--from {old!r} is a regular token the BPE merges use: rename added or "
                "reserved tokens only"
            )
        if not new.strip():  # an empty special token matches nowhere and prints as nothing
            problems.append(
                f"--to {new!r} is empty or only whitespace: a token needs visible characters"
            )
        elif new in vocab:
            problems.append(f"--to {new!r} already is a token of this tokenizer")
    if len(set(mapping.values())) < len(mapping):
        problems.append("two --from tokens get the same --to name")
    if problems:
        raise UserError("; ".join(problems))


def _edit_tokenizer_json(data: dict[str, Any], mapping: dict[str, str]) -> dict[str, Any]:
    edited = _renamed(data, mapping, skip=("merges",))
    # A renamed token must stay matched as one piece of text: make it an added special token.
    added = {t["content"] for t in edited.get("added_tokens") or []}
    model_vocab = edited["model"]["vocab"]
    for new in mapping.values():
        if new not in added:
            ids = dict(model_vocab) if isinstance(model_vocab, dict) else None
            index = ids[new] if ids else [p for p, _ in model_vocab].index(new)
            edited.setdefault("added_tokens", []).append(
                {
                    "id": index,
                    "content": new,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
            )
    edited["added_tokens"] = sorted(edited.get("added_tokens") or [], key=lambda t: t["id"])
    return edited


def replace_tokens(tokenizer_dir: str | Path, out_dir: str | Path, mapping: dict[str, str]) -> Path:
    """Write a copy of the tokenizer in ``tokenizer_dir`` to ``out_dir`` with tokens renamed.

    Args:
        tokenizer_dir: A saved (fast) tokenizer folder with ``tokenizer.json``.
        out_dir: Where to write the renamed tokenizer (must not exist or be empty).
        mapping: ``{old token: new token}``.

    Raises:
        UserError: No tokenizer.json, an unknown ``--from``, an existing ``--to``, a regular
            merged token, or a non-empty output folder.
    """
    from tokenizers import Tokenizer

    source, out = Path(tokenizer_dir), Path(out_dir)
    if not (source / "tokenizer.json").is_file():
        raise UserError(
            f"{source}: no tokenizer.json (replace_tokens edits fast tokenizers; save the "
            "tokenizer with transformers first)"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty: choose a new OUTPATH")
    if not mapping:
        raise UserError("give at least one --from OLD --to NEW pair")
    original = Tokenizer.from_file(str(source / "tokenizer.json"))
    data = json.loads(original.to_str())
    _check(data, mapping)
    renamed = Tokenizer.from_str(json.dumps(_edit_tokenizer_json(data, mapping)))
    size = original.get_vocab_size(with_added_tokens=True)
    for index in range(size):  # ids never move
        old = original.id_to_token(index)
        if renamed.id_to_token(index) != mapping.get(old, old):  # pragma: no cover - a bug guard
            raise RuntimeError(f"token id {index} changed while renaming")
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.name not in EDITED:
            shutil.copy2(path, out / path.name)
    renamed.save(str(out / "tokenizer.json"))
    for name in EDITED[1:]:
        if (source / name).is_file():
            config = json.loads((source / name).read_text(encoding="utf-8"))
            # The chat template is text, not a token name: left as it is (see the warning).
            config = _renamed(config, mapping, skip=("chat_template",))
            (out / name).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    for old in mapping:
        for path in _templates_mentioning(out, old):
            logger.warning("%s mentions %r: edit the chat template if it should change", path, old)
    return out


def _templates_mentioning(folder: Path, token: str) -> list[Path]:
    found = [p for p in folder.glob("*.jinja") if token in p.read_text(encoding="utf-8")]
    config = folder / "tokenizer_config.json"
    if config.is_file() and token in str(json.loads(config.read_text()).get("chat_template", "")):
        found.append(config)
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tokenizer", help="the tokenizer folder (with tokenizer.json)")
    parser.add_argument("outpath", help="where to write the renamed tokenizer")
    parser.add_argument(
        "--from", dest="old", action="append", default=[], metavar="A", help="a token to rename"
    )
    parser.add_argument(
        "--to", dest="new", action="append", default=[], metavar="B", help="its new name"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replace_tokens",
        description="Rename tokens of a tokenizer, keeping their ids (e.g. reserved tokens to "
        "<|im_start|>/<|im_end|>, so a chat template needs no new embeddings): "
        "replace_tokens TOKENIZER OUTPATH --from A --to B [--from C --to D ...]",
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if len(args.old) != len(args.new):
        raise UserError(
            f"give one --to per --from: got {len(args.old)} --from and {len(args.new)} --to"
        )
    if len(set(args.old)) < len(args.old):
        raise UserError("a --from token is given twice")
    out = replace_tokens(args.tokenizer, args.outpath, dict(zip(args.old, args.new, strict=True)))
    pairs = ", ".join(f"{a} -> {b}" for a, b in zip(args.old, args.new, strict=True))
    print(f"wrote {out} ({pairs}; token ids unchanged)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``replace_tokens``."""
    from finetuning.console import run_tool

    parser = build_parser()
    return run_tool(lambda: run(parser.parse_args(argv)))
