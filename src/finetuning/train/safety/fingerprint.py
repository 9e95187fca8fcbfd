"""What must not change across a resume, stored in the output directory and checked on resume.

A checkpoint holds the optimizer state, the data position and the adapter of one config.
Resuming it with another total batch, other data, another adapter shape, another method,
tokenizer, template or length limit either crashes with a state-dict traceback or, worse, silently trains
on a mix of two setups. The first run writes ``<output_dir>/run_fingerprint.json``; a resume
compares the current config with it and refuses (exit 2) naming each change. What may change
across a resume (logging, evaluation and save frequency, the number of steps, tracking) is
not part of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from finetuning.config.experiment import ExperimentConfig
from finetuning.config.methods import rows_of
from finetuning.errors import UserError

logger = logging.getLogger(__name__)

FILE_NAME = "run_fingerprint.json"

#: PEFT kwargs that decide which tensors an adapter has and their shapes (others, such as the
#: dropout or the scaling, may change when resuming).
ADAPTER_SHAPE_KWARGS = (
    "r",
    "target_modules",
    "exclude_modules",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "use_dora",
    "use_rslora",
    "bias",
    "num_virtual_tokens",
    "token_dim",
    "num_transformer_submodules",
    "num_layers",
    "encoder_hidden_size",
    "prefix_projection",
    "feedforward_modules",
    "init_lora_weights",
    "target_parameters",
)


#: The files a saved tokenizer is read from (the model's weights are not hashed).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)


def _tokenizer(config: ExperimentConfig) -> dict[str, Any]:
    """The tokenizer the run encodes with: a hash of its files, or its Hub id.

    The hash covers the vocabulary, merges, special and added tokens and the saved chat
    template, so a renamed copy (``replace_tokens``) or another tokenizer is noticed, while the
    same files in another folder are not a change.
    """
    import hashlib

    run = config.run_conf
    source = run.tokenizer or run.model
    folder = Path(source)
    found: dict[str, Any] = {"use_fast": run.use_fast_tokenizer}
    if not folder.is_dir():
        found["hub_id"] = source
        return found
    digest = hashlib.sha256()
    extra = sorted((folder / "additional_chat_templates").glob("*.jinja"))
    for path in [folder / name for name in TOKENIZER_FILES] + extra:
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    found["files_sha256"] = digest.hexdigest()
    return found


def _data(config: ExperimentConfig) -> dict[str, Any]:
    from finetuning.data.prepare import file_digest

    def sources(section: Any) -> list[dict[str, Any]]:
        found = []
        for ds in getattr(section, "datasets", None) or []:
            path = Path(ds.path)
            entry = {"sha256": file_digest(path) if path.exists() else f"missing: {ds.path}"}
            # How the rows are read, where it is not the default: another format, renamed
            # columns, or another subset / split / revision of a dataset read by name give
            # other rows. (Left out at their defaults, so older fingerprints still match.)
            reading = {
                "format": ds.format,
                "columns": ds.columns,
                "name": ds.name,
                "split": None if ds.split == "train" else ds.split,
                "revision": ds.revision,
                "data_files": ds.data_files,
            }
            entry.update({k: v for k, v in reading.items() if v})
            if hasattr(ds, "sampling_weight"):
                entry["sampling_weight"] = ds.sampling_weight
            found.append(entry)
        return found

    data = config.data_conf
    train, valid = data.training_data, data.validation_data
    return {
        "training_data": {
            "type": train.type,
            "seed": getattr(train, "seed", None),
            "datasets": sources(train),
        },
        "validation_data": {
            "type": valid.type,
            "ratio": getattr(valid, "ratio", None),
            "seed": getattr(valid, "seed", None),
            "datasets": sources(valid),
        },
    }


def _adapter(config: ExperimentConfig) -> dict[str, Any]:
    peft = config.peft_conf
    shape: dict[str, Any] = {"peft_type": str(peft.peft_type)}
    if peft.peft_type == "PRETRAINED_PEFT":
        shape["name_or_path"] = peft.name_or_path
    elif peft.peft_type != "NO_PEFT":
        kwargs = peft.peft_kwargs
        shape.update({k: kwargs[k] for k in ADAPTER_SHAPE_KWARGS if k in kwargs})
    return shape


def fingerprint(config: ExperimentConfig) -> dict[str, Any]:
    """The values of ``config`` that a resume must keep (JSON-ready)."""
    from finetuning.data.preflight import encode_settings

    settings = encode_settings(config)
    lengths = {"max_length": settings.max_length}
    if rows_of(config.method) in ("chat", "text"):
        lengths.update(
            length_handling=settings.length_handling,
            train_on_completions_only=settings.completions_only,
        )
    elif rows_of(config.method) == "prompt":  # GRPO: the step's prompt groups and batch
        from finetuning.train.batch import sequences_per_prompt

        lengths.update(num_generations=sequences_per_prompt(config))
    else:
        lengths.update(
            max_prompt_length=settings.max_prompt_length, truncation_mode=settings.truncation_mode
        )
    found = {
        "method": config.method,
        "model": config.run_conf.model,
        "adapter": _adapter(config),
        "tokenizer": _tokenizer(config),
        "total_train_batch_size": config.batchsize_conf.total_train_batch_size,
        "chat_template_name": str(config.data_conf.chat_template_name.value),
        "lengths": lengths,
        "data": _data(config),
    }
    return json.loads(json.dumps(found, default=str))


def _differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{where}.{key}" if where else str(key)
            out += _differences(old.get(key), new.get(key), path)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _differences(a, b, f"{where}[{i}]")
        return out
    return [] if old == new else [f"{where}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resume(config: ExperimentConfig, resume: str | None) -> None:
    """Refuse a resume whose config changed what the checkpoint depends on (reads only).

    The fingerprint is the one stored beside the checkpoint (in its parent folder). A checkpoint
    without one (written by an older version) is resumed as before, with a note.

    Raises:
        UserError: The resume would continue a checkpoint of a different setup; each change is
            listed with the two ways out.
    """
    if resume is None:
        return
    stored_path = Path(resume).parent / FILE_NAME
    try:
        stored = json.loads(stored_path.read_text())
    except FileNotFoundError:
        logger.info("%s has no %s: resuming without checking the config", resume, FILE_NAME)
        return
    except (OSError, ValueError):
        logger.warning("%s is unreadable: resuming without checking the config", stored_path)
        return
    current = fingerprint(config)
    for key in [k for k in current if isinstance(stored, dict) and k not in stored]:
        # Written by a version that did not record it: nothing to compare with.
        logger.info("%s records no %s: not checked on this resume", stored_path, key)
        del current[key]
    changes = _differences(stored, current)
    if changes:
        raise UserError(
            changes,
            header=(
                f"cannot resume {resume}: the config changed what its checkpoints depend on. "
                "Either start a new run in another training_args.output_dir, or start over in "
                "this one with run_conf.resume_from_checkpoint: false. Changed:"
            ),
        )


def record(config: ExperimentConfig, output_dir: Path) -> None:
    """Write the fingerprint of ``config`` into ``output_dir`` (main process only)."""
    from finetuning.train.safety.writes import atomic_write_text

    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output_dir / FILE_NAME, json.dumps(fingerprint(config), indent=1) + "\n")
