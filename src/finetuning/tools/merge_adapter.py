"""`merge_adapter BASEMODEL PEFTMODEL OUTPATH`: fold an adapter into its base and save the result."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from finetuning.data.processor import has_processor
from finetuning.data.stop_tokens import write_stop_ids
from finetuning.errors import UserError
from finetuning.tools.inference import load_for_inference

logger = logging.getLogger(__name__)


def parse_device_map(value: str) -> str | dict:
    """'auto', 'cpu', 'cuda', ... or a JSON object mapping modules to devices."""
    if value.strip().startswith("{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise UserError(f"--device_map: not valid JSON: {exc}") from None
    return value


def _task_type(adapter: str) -> str | None:
    """The ``task_type`` in the adapter's ``adapter_config.json`` (None when unreadable)."""
    import json

    try:
        return json.loads((Path(adapter) / "adapter_config.json").read_text()).get("task_type")
    except (OSError, ValueError, AttributeError):
        return None


def merge_and_save(
    base: str, adapter: str, out: str | Path, tokenizer: str | None = None, device_map="auto"
) -> Path:
    """Merge ``adapter`` into ``base`` and save model, tokenizer and generation config to ``out``.

    The base is the resized ``checkpoint-new-basemodel`` automatically when the adapter's run
    added tokens. A reward model's adapter (``task_type: SEQ_CLS``) gives a sequence classifier. The generation config stops at the tokenizer's EOS, which our saved tokenizers
    set to the template's end-of-turn marker.
    """
    import torch

    kwargs = {"dtype": "auto"}
    if device_map not in (None, "none"):
        if device_map == "auto" and not torch.cuda.is_available():
            device_map = "cpu"
        kwargs["device_map"] = device_map
    # A reward model's adapter (SEQ_CLS) merges into the sequence classifier, score head included.
    score_head = _task_type(adapter) == "SEQ_CLS"
    model, tok = load_for_inference(base, adapter, tokenizer, kwargs, score_head=score_head)
    merged = model.merge_and_unload()
    out = Path(out)
    if getattr(merged, "generation_config", None) is not None:
        merged.generation_config.eos_token_id = tok.eos_token_id
        merged.generation_config.pad_token_id = tok.pad_token_id
    base_eos = merged.config.get_text_config().eos_token_id  # nested in multimodal configs
    merged.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    source = tokenizer or adapter
    if has_processor(source):  # a vision-language model: its image processor and template too
        from transformers import AutoProcessor

        AutoProcessor.from_pretrained(source).save_pretrained(out)
    # The saved tokenizer's EOS is the end-of-turn marker; the base's own EOS also stops.
    eos_ids = [tok.eos_token_id]
    for token_id in base_eos if isinstance(base_eos, list) else [base_eos]:
        if token_id is not None and token_id not in eos_ids:
            eos_ids.append(token_id)
    write_stop_ids(out, eos_ids, tok.pad_token_id)
    logger.info("merged %s into %s and saved to %s", adapter, base, out)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="merge_adapter",
        description="Merge a PEFT adapter into its base model and save one model (safetensors, "
        "inference-ready tokenizer, generation config).",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add merge_adapter's arguments to ``parser`` (its own, or the `finetuning` subcommand's)."""
    parser.add_argument("basemodel", help="base model path or Hub id")
    parser.add_argument("peftmodel", help="adapter path or Hub id")
    parser.add_argument("outpath", help="where to save the merged model")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer to save with the model (default: the adapter's)",
    )
    parser.add_argument(
        "--device_map", "--device-map", default="auto",
        help="'auto' (GPU if any, else CPU), 'cpu', 'cuda' or a JSON object",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    merge_and_save(
        args.basemodel,
        args.peftmodel,
        args.outpath,
        args.tokenizer,
        parse_device_map(args.device_map),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``merge_adapter``."""
    from finetuning.console import run_tool

    return run_tool(lambda: run(build_parser().parse_args(argv)))
