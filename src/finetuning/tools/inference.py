"""Loading a trained checkpoint for inference: base model (+ adapter) and its saved tokenizer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetuning.config.training import new_basemodel_name
from finetuning.data.processor import is_vision_source
from finetuning.errors import UserError

logger = logging.getLogger(__name__)

#: What a run writes into its output folder; it names the folder of the resized base.
RESOLVED_CONFIG = "resolved_config.yaml"


def vocab_rows(model_dir: str) -> int | None:
    """Embedding rows of a local model folder (from its config.json), or None."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    data = json.loads(config.read_text())
    return data.get("vocab_size") or data.get("text_config", {}).get("vocab_size")


def saved_basemodel_name(run_dir: Path) -> str:
    """The resized base's folder name, from the run's saved config (the default without one).

    A run writes ``resolved_config.yaml`` into its output folder, beside the adapter's
    checkpoints; its ``sft_args.save_name_if_new_basemodel`` says where the resized base went.
    """
    import yaml

    name = None
    path = run_dir / RESOLVED_CONFIG
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("sft_args"), dict):
            name = data["sft_args"].get("save_name_if_new_basemodel")
    if isinstance(name, str) and name:
        return name
    return new_basemodel_name(None)


def resolve_base(base: str, adapter: str | None, tokenizer_len: int) -> str:
    """The base model the adapter needs.

    When the adapter's run added tokens to the vocabulary, its base is the resized one saved
    beside it (``sft_args.save_name_if_new_basemodel`` of the run's saved config, by default
    ``checkpoint-new-basemodel``); that one is used automatically.

    Raises:
        UserError: The adapter needs a larger vocabulary than ``base`` has and no resized base
            is found next to it.
    """
    if adapter is None:
        return base
    rows = vocab_rows(base)
    if rows is None or tokenizer_len <= rows:
        return base
    run_dir = Path(adapter).resolve().parent
    name = saved_basemodel_name(run_dir)
    sibling = run_dir / name
    if sibling.is_dir() and (vocab_rows(str(sibling)) or 0) >= tokenizer_len:
        logger.info("the adapter's run added tokens: using the resized base %s", sibling)
        return str(sibling)
    raise UserError(
        f"the adapter {adapter} was trained with {tokenizer_len} tokens but the base {base} has "
        f"{rows} embedding rows: use the resized base that training saved as "
        f"{name}/ next to the adapter's checkpoints"
    )


def _shape_mismatch(base: str, adapter: str, text: str) -> str:
    """A short message for PEFT's "size mismatch" state-dict error (first tensor only)."""
    lines = [line.strip() for line in text.splitlines() if "size mismatch" in line]
    count = len(lines)
    first = lines[0].removeprefix("size mismatch for ") if lines else text.splitlines()[0]
    return (
        f"the adapter {adapter!r} does not fit the base model {base!r}: {count} tensor(s) have "
        f"other shapes (first: {first}). Use the base model the adapter was trained on (its "
        "adapter_config.json names it as base_model_name_or_path)"
    )


def load_tokenizer_for_inference(source: str) -> Any:
    """Load a saved tokenizer (ours are saved inference-ready)."""
    from transformers import AutoTokenizer

    if (source.startswith(("/", ".")) or source.count("/") > 1) and not Path(source).exists():
        raise UserError(f"model folder not found: {source}")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {source!r}: {exc}") from None


def load_for_inference(
    model: str,
    adapter: str | None = None,
    tokenizer: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    score_head: bool = False,
) -> tuple[Any, Any]:
    """Load model (+ adapter) and tokenizer for generation or merging.

    Args:
        model: Base model path or Hub id.
        adapter: Adapter path, or None.
        tokenizer: Tokenizer path; default: the adapter's, else the model's.
        model_kwargs: Extra ``from_pretrained`` arguments (dtype, device_map, quantization).
        score_head: Load a reward model: ``AutoModelForSequenceClassification`` with one output
            (an adapter's run saved its score head in the adapter).

    Returns:
        (model in eval mode, tokenizer).
    """
    import contextlib

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from finetuning.model.loading import score_head_from_causal_lm
    from finetuning.model.weights import check_weight_files

    tok = load_tokenizer_for_inference(tokenizer or adapter or model)
    base = resolve_base(model, adapter, len(tok))
    check_weight_files(base, "the model")
    auto, kwargs = AutoModelForCausalLM, dict(model_kwargs or {})
    if not score_head and is_vision_source(base):  # a vision-language model keeps its vision
        from transformers import AutoModelForImageTextToText

        auto = AutoModelForImageTextToText
    quiet = contextlib.nullcontext()
    if score_head:
        auto, quiet = AutoModelForSequenceClassification, score_head_from_causal_lm()
        kwargs["num_labels"] = 1
    try:
        with quiet:
            loaded = auto.from_pretrained(base, **kwargs)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model {base!r}: {str(exc).splitlines()[0]}") from None
    if adapter is not None:
        from peft import PeftModel

        check_weight_files(adapter, "the adapter")
        try:
            loaded = PeftModel.from_pretrained(loaded, adapter)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load the adapter {adapter!r}: {exc}") from None
        except RuntimeError as exc:
            if "size mismatch" not in str(exc):
                raise
            raise UserError(_shape_mismatch(base, adapter, str(exc))) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return loaded.eval(), tok
