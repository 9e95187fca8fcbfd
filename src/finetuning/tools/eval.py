"""`finetuning eval CONFIG [--checkpoint DIR]`: the checkpoint to evaluate, the results file.

The evaluations themselves are the run's (``finetuning.train.reporting.evaluation``): the
config's validation sets (``eval_loss``, ``eval_<source>_loss``), its generation evals and its
lm-eval tasks. This module loads the model to evaluate (the base when no checkpoint is given,
else a final or ``checkpoint-N`` folder, an adapter or a merged model), writes
``eval_results.json`` next to it and prints the table. See docs/evaluating.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from finetuning.errors import UserError
from finetuning.train.safety.writes import atomic_write_text

RESULTS = "eval_results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's arguments."""
    parser.add_argument("config", help="the YAML config file of the run")
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="the checkpoint to evaluate: a run's final folder, a checkpoint-N, an adapter or a "
        "merged model (default: the config's base model, run_conf.model)",
    )


def config_hash(resolved: dict[str, Any]) -> str:
    """The sha256 of the resolved config (every default filled in), as canonical JSON."""
    text = json.dumps(resolved, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_model(config: Any, checkpoint: str | None, tokenizer: Any) -> Any:
    """The model to evaluate, in eval mode, with embeddings for every token of ``tokenizer``.

    Raises:
        UserError: The checkpoint folder is missing or holds no model or adapter.
    """
    from transformers import AutoModelForCausalLM

    from finetuning.model.loading import load_model as load_base
    from finetuning.model.loading import model_kwargs, resize_for_tokenizer
    from finetuning.tools.inference import resolve_base

    if checkpoint is None:
        model = load_base(config)
        resize_for_tokenizer(model, tokenizer)
        return model.eval()
    folder = Path(checkpoint)
    adapter = (folder / "adapter_config.json").is_file()
    if not folder.is_dir() or not (adapter or (folder / "config.json").is_file()):
        raise UserError(
            f"--checkpoint {checkpoint}: not a model or adapter folder (no config.json or "
            "adapter_config.json)"
        )
    base = resolve_base(config.run_conf.model, str(folder), len(tokenizer)) if adapter else folder
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base), **model_kwargs(config, None))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model {base}: {str(exc).splitlines()[0]}") from None
    resize_for_tokenizer(model, tokenizer)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder))
    return model.eval()


def results_path(checkpoint: str | None, output_dir: Path) -> Path:
    """``eval_results.json`` in the checkpoint's folder; for the base, in ``output_dir/eval-base``."""
    folder = Path(checkpoint) if checkpoint else output_dir / "eval-base"
    return folder / RESULTS


def write_results(path: Path, results: dict[str, Any]) -> Path:
    """Write the results as JSON (atomically)."""
    atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")
    return path


def format_table(results: dict[str, Any]) -> str:
    """The metrics and row counts as an aligned two-column table."""
    pairs = [(k, v) for k, v in results["metrics"].items()]
    pairs += [(f"rows: {k}", v) for k, v in results["rows"].items()]
    width = max((len(k) for k, _ in pairs), default=10)
    lines = [f"checkpoint: {results['checkpoint']}", f"{'metric':<{width}}  value"]
    for key, value in pairs:
        shown = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)
