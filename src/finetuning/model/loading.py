"""Loading the model (dtype, device map, quantization), resizing for new tokens, adapters."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from finetuning.config.experiment import ExperimentConfig
from finetuning.errors import UserError
from finetuning.model.vision import freeze_vision, is_vision_language, lora_targets
from finetuning.model.weights import check_weight_files

logger = logging.getLogger(__name__)


def load_kwargs(args: Any, quant: Any, key: str = "run_conf.model_args") -> dict[str, Any]:
    """``from_pretrained`` arguments from ``model_args`` (only the keys set) and ``quant_conf``.

    ``torch_dtype`` becomes ``dtype``; ``use_cache`` is dropped (set on the loaded config).
    """
    kwargs = {name: getattr(args, name) for name in args.model_fields_set}
    kwargs.update(args.model_extra or {})
    if "torch_dtype" in kwargs:
        if "dtype" in kwargs:
            raise UserError(f"{key}: set either torch_dtype or dtype, not both")
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    kwargs.pop("use_cache", None)
    if quant.quantization_type == "bits-and-bytes":
        kwargs["quantization_config"] = bnb_config(quant)
    return kwargs


def model_kwargs(config: ExperimentConfig, distributed: str | None) -> dict[str, Any]:
    """Keyword arguments for loading the model to train: what the user set, plus our choices.

    Args:
        config: The experiment config.
        distributed: None (one process), "ddp", "deepspeed" or "fsdp".
    """
    # Training always runs without a KV cache (set on the loaded model's config).
    kwargs = load_kwargs(config.run_conf.model_args, config.quant_conf)
    if "device_map" not in kwargs and distributed == "ddp" and _has_cuda():
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if kwargs.get("device_map") is not None and distributed in ("deepspeed", "fsdp"):
        logger.warning("run_conf.model_args.device_map is ignored under %s", distributed)
        kwargs.pop("device_map")
    kwargs.setdefault("trust_remote_code", False)
    # Pickle weights can run code when loaded: only with an explicit use_safetensors: false.
    kwargs.setdefault("use_safetensors", True)
    return kwargs


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def bnb_config(quant: Any) -> Any:
    """transformers' ``BitsAndBytesConfig`` from ``quant_conf`` (needs bitsandbytes)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(
            "quant_conf: bits-and-bytes quantization needs bitsandbytes: "
            "pip install 'finetuning[quant]'"
        )
    from transformers import BitsAndBytesConfig

    fields = quant.model_dump(exclude={"quantization_type"})
    return BitsAndBytesConfig(**{k: v for k, v in fields.items() if v is not None})


def check_quantized_vocabulary(config: ExperimentConfig, tokenizer: Any) -> None:
    """Before loading: a quantized model cannot grow its embeddings for template tokens.

    Raises:
        UserError: Quantization is on and the tokenizer has more tokens than the model has rows.
    """
    if config.quant_conf.quantization_type == "no-quantization":
        return
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(
        config.run_conf.model, trust_remote_code=config.run_conf.model_args.trust_remote_code
    )
    rows = getattr(model_config.get_text_config(), "vocab_size", None)
    if rows is not None and len(tokenizer) > rows:
        raise UserError(
            f"quant_conf: the chat template {config.data_conf.chat_template_name.value!r} adds tokens "
            f"to the vocabulary ({len(tokenizer)} > {rows} embedding rows), and a quantized model "
            "cannot be resized: use a template whose tokens the tokenizer has (e.g. keep-original), "
            "rename unused reserved tokens to the template's markers with replace_tokens (same "
            "ids; see docs/data.md), or train without quantization"
        )


def load_model(
    config: ExperimentConfig,
    distributed: str | None = None,
    score_head: bool = False,
    vision: bool = False,
) -> Any:
    """Load ``run_conf.model`` as a causal LM for training.

    With ``vision``, as a vision-language model (``AutoModelForImageTextToText``), its vision
    encoder and projector frozen unless ``run_conf.train_vision_tower``. With ``score_head``, as ``AutoModelForSequenceClassification`` with one output (a reward
    model): the causal LM's body with a new, randomly initialised ``score`` layer in place of
    its LM head.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    source = config.run_conf.model
    kwargs = model_kwargs(config, distributed)
    check_weight_files(source, "run_conf.model")
    auto = AutoModelForCausalLM
    if vision:
        from transformers import AutoModelForImageTextToText

        auto = AutoModelForImageTextToText
    if score_head:
        auto, kwargs = AutoModelForSequenceClassification, {**kwargs, "num_labels": 1}
    try:
        with score_head_from_causal_lm() if score_head else contextlib.nullcontext():
            model = auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        text = str(exc)
        if "safetensors" in text and kwargs.get("use_safetensors"):
            raise UserError(
                f"run_conf.model: {source!r} has no safetensors weights. Pickle weights (*.bin) "
                "can run code when loaded: if you trust them, set "
                "run_conf.model_args.use_safetensors: false"
            ) from None
        if "trust_remote_code" in text:
            raise UserError(
                f"run_conf.model: {source!r} needs custom code: set "
                "run_conf.model_args.trust_remote_code: true if you trust it"
            ) from None
        if not Path(source).exists() and "/" not in source.strip("/"):
            raise UserError(f"run_conf.model: model not found: {source!r}") from None
        raise UserError(f"run_conf.model: cannot load {source!r}: {text.splitlines()[0]}") from None
    model.config.use_cache = False
    if vision:
        freeze_vision(model, config.run_conf.train_vision_tower)
    if config.quant_conf.quantization_type != "no-quantization":
        kinds = sorted(
            {type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Linear")}
            - {"Linear"}
        )
        logger.info("loaded %s quantized: %s", source, ", ".join(kinds) or "no quantized layers")
    return model


def score_head_from_causal_lm() -> contextlib.AbstractContextManager:
    """Loading a causal LM's checkpoint as a sequence classifier, without its load report.

    The new ``score`` layer is missing from the checkpoint and the ``lm_head`` is left out: both
    are what a reward model is, and transformers would print a table of them. TRL's scoped
    override (the one its ``RewardTrainer`` uses when it loads a model by name) silences them.
    """
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    return suppress_seqcls_warning()


def resize_for_tokenizer(model: Any, tokenizer: Any) -> bool:
    """Grow the embeddings (mean-initialised rows) when the tokenizer has more tokens.

    Returns:
        True when the model was resized.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= rows:
        return False
    if getattr(model, "is_quantized", False) or getattr(model, "is_loaded_in_4bit", False):
        raise UserError(
            "the chat template adds tokens to the vocabulary, but a quantized model cannot be "
            "resized: use a template whose tokens the tokenizer has, or no quantization"
        )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    logger.info(
        "resized the embeddings from %d to %d rows (mean-initialised)", rows, len(tokenizer)
    )
    return True


def _embedding_module_names(model: Any) -> list[str]:
    names = []
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for name, candidate in model.named_modules():
            if candidate is module:
                names.append(name.split(".")[-1])
                break
    return names


def apply_adapter(config: ExperimentConfig, model: Any, resized: bool) -> Any:
    """Wrap ``model`` with the adapter of ``peft_conf`` (or return it for NO_PEFT).

    With new vocabulary rows the embedding and output layers join ``modules_to_save`` so those
    rows train. Quantized models are prepared for k-bit training first.
    """
    peft_conf = config.peft_conf
    if peft_conf.peft_type == "NO_PEFT":
        return model
    import peft

    if config.quant_conf.quantization_type == "bits-and-bytes":
        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=bool(config.training_args.get("activation_checkpointing")),
        )
    if peft_conf.peft_type == "PRETRAINED_PEFT":
        if resized:
            raise UserError(
                "peft_conf: PRETRAINED_PEFT cannot continue an adapter when the chat template "
                "adds tokens to the vocabulary (the adapter was trained without them): use a "
                "template the tokenizer already has tokens for"
            )
        try:
            return peft.PeftModel.from_pretrained(model, peft_conf.name_or_path, is_trainable=True)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"peft_conf.name_or_path: cannot load the adapter {peft_conf.name_or_path!r}: {exc}"
            ) from None
    kwargs = dict(peft_conf.peft_kwargs)
    if (
        is_vision_language(model)
        and peft_conf.peft_type == "LORA"
        and "target_modules" not in kwargs
    ):
        # PEFT's defaults would also reach the vision encoder's attention (same layer names).
        kwargs["target_modules"] = lora_targets(model, config.run_conf.train_vision_tower)
    if resized:
        extra = [
            n for n in _embedding_module_names(model) if n not in kwargs.get("target_modules", [])
        ]
        kwargs["modules_to_save"] = list(
            dict.fromkeys([*(kwargs.get("modules_to_save") or []), *extra])
        )
    config_cls = peft.PEFT_TYPE_TO_CONFIG_MAPPING[peft_conf.peft_type]
    try:
        peft_config = config_cls(task_type=peft_conf.task_type.value, **kwargs)
        return peft.get_peft_model(model, peft_config)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"peft_conf.peft_kwargs: PEFT rejected them for {peft_conf.peft_type}: {exc}"
        ) from None
