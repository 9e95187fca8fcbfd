"""`create_vllm_compatible_adapter ADAPTER_DIR`: keep only the LoRA tensors vLLM can load.

PEFT saves more than the LoRA matrices (e.g. the full embedding matrix when ``embed_tokens`` is a
target, or ``modules_to_save`` copies), and vLLM refuses such adapters. This keeps the tensors
whose names contain ``.lora_`` and backs the original up. When those other tensors were trained
(``modules_to_save``, or a template that added tokens) removing them would change the model, so
with ``--training-config`` the adapter is left untouched and the reason is printed.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from finetuning.errors import UserError

logger = logging.getLogger(__name__)

WEIGHTS = "adapter_model.safetensors"
BACKUP = "old_with_extra_layers_adapter_model.safetensors"


def reason_to_keep(training_config: str | Path, adapter_dir: Path) -> str | None:
    """Why the non-LoRA tensors must stay, judged from the training config (None: they may go)."""
    from finetuning.config.loading import load_config
    from finetuning.tools.inference import load_tokenizer_for_inference, vocab_rows

    config = load_config(training_config, None).config
    peft_conf = config.peft_conf
    if peft_conf.peft_type == "NO_PEFT":
        return "the training config is a full fine-tune (NO_PEFT): there is no adapter to strip"
    if peft_conf.peft_type != "PRETRAINED_PEFT" and peft_conf.peft_kwargs.get("modules_to_save"):
        return "the adapter trained modules_to_save, which vLLM would drop"
    rows = vocab_rows(config.run_conf.model)
    tok = load_tokenizer_for_inference(str(adapter_dir))
    if rows is not None and len(tok) > rows:
        return (
            f"the chat template added tokens to the vocabulary ({len(tok)} > {rows} rows): the "
            "embedding and output layers were trained and must stay"
        )
    return None


def make_vllm_compatible(adapter_dir: str | Path, training_config: str | Path | None = None) -> str:
    """Strip non-LoRA tensors from ``adapter_dir`` (idempotent); returns what was done.

    Raises:
        UserError: The folder has no ``adapter_model.safetensors``.
    """
    from safetensors.torch import load_file, save_file

    adapter_dir = Path(adapter_dir)
    weights = adapter_dir / WEIGHTS
    if not weights.is_file():
        raise UserError(f"{adapter_dir} has no {WEIGHTS}: is it a PEFT adapter folder?")
    if training_config is not None:
        reason = reason_to_keep(training_config, adapter_dir)
        if reason:
            return f"left {adapter_dir} unchanged: {reason}"
    tensors = load_file(weights)
    lora = {k: v for k, v in tensors.items() if ".lora_" in k}
    if len(lora) == len(tensors):
        return f"{adapter_dir} already holds only LoRA tensors: nothing to do"
    backup = adapter_dir / BACKUP
    if not backup.exists():
        weights.rename(backup)
    save_file(lora, weights, metadata={"format": "pt"})
    removed = sorted(set(tensors) - set(lora))
    return f"removed {len(removed)} non-LoRA tensors ({', '.join(removed[:4])}...); original kept as {BACKUP}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="create_vllm_compatible_adapter",
        description="Keep only the LoRA tensors of an adapter so vLLM can load it (the original "
        f"is kept as {BACKUP}); running it twice changes nothing.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the tool's arguments to ``parser`` (its own, or the `finetuning` subcommand's)."""
    parser.add_argument("model_path", help="the adapter folder")
    parser.add_argument(
        "--training-config", default=None,
        help="the adapter's training config: leaves the adapter alone when its extra layers were trained",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    print(make_vllm_compatible(args.model_path, args.training_config))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``create_vllm_compatible_adapter``."""
    from finetuning.console import run_tool

    return run_tool(lambda: run(build_parser().parse_args(argv)))
