"""`finetuning init DIR`: a runnable example with a tiny local model, data and configs.

The example is a config per method (SFT, DPO, KTO, ORPO, SimPO, GRPO, reward model, continued
pretraining; each trains the tiny model offline) and a generate config for the trained SFT model. ``DIR/.finetuning-example.json`` records a hash of every file
``init`` wrote, so running ``init`` again recognises an unchanged example and leaves it alone,
and refuses to overwrite one the user changed unless asked with ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from finetuning.errors import UserError
from finetuning.testing import (
    build_model,
    synthetic_arithmetic,
    synthetic_chats,
    synthetic_documents,
    synthetic_feedback,
    synthetic_preferences,
    write_jsonl,
)

logger = logging.getLogger(__name__)

EXAMPLE_CONFIG = """\
# A runnable example: full fine-tuning of a tiny local Llama-style model on synthetic chats.
# Run it with:  finetuning sft {dir}/sft.yaml   (then: finetuning generate {dir}/generate.yaml answers.yaml)
method: sft
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {dir}/data/train.jsonl
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.05
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: {dir}/checkpoints
  logging_dir: {dir}/logs
  learning_rate: 2.0e-3
  num_train_epochs: 1
  lr_scheduler_type: cosine
  warmup_ratio: 0.05
  logging_steps: 10
  eval_strategy: steps
  eval_steps: 0.25
  save_strategy: steps
  save_steps: 0.5
  bf16: false  # fp32 is several times faster than bf16 on most CPUs
batchsize_conf:
  total_train_batch_size: 16
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: NO_PEFT
run_conf:
  model: {dir}/model
  resume_from_checkpoint: auto
sft_args:
  max_seq_length: 256
  train_on_completions_only: true
"""


DPO_CONFIG = """\
# A runnable example: direct preference optimisation of the same tiny model (full parameters).
# Run it with:  finetuning dpo {dir}/dpo.yaml
method: dpo
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {dir}/data/preferences.jsonl
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.1
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: {dir}/checkpoints-dpo
  logging_dir: {dir}/logs-dpo
  learning_rate: 5.0e-4
  beta: 0.1
  num_train_epochs: 1
  max_length: 256
  max_prompt_length: 128
  logging_steps: 5
  eval_strategy: epoch
  save_strategy: epoch
  bf16: false
batchsize_conf:
  total_train_batch_size: 16
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: NO_PEFT
run_conf:
  model: {dir}/model
  resume_from_checkpoint: auto
"""

#: The preference methods' examples: (file, method, data file, what, extra training_args).
_PREFERENCE_EXAMPLES = (
    (
        "kto.yaml",
        "kto",
        "feedback.jsonl",
        "KTO from unpaired thumbs-up/thumbs-down feedback (about 2 desirable per undesirable\n"
        "# example, so desirable_weight 0.6 keeps TRL's recommended balance; the preflight shows it)",
        "  beta: 0.1\n  desirable_weight: 0.6\n  undesirable_weight: 1.0\n",
    ),
    (
        "orpo.yaml",
        "orpo",
        "preferences.jsonl",
        "ORPO on the preference data (no reference model, no SFT stage needed)",
        "  beta: 0.1\n",
    ),
    (
        "simpo.yaml",
        "simpo",
        "preferences.jsonl",
        "SimPO on the preference data (TRL's CPO trainer with loss_type simpo, cpo_alpha 0;\n"
        "# no reference model)",
        "  beta: 2.0\n  simpo_gamma: 1.0\n",
    ),
)

PREFERENCE_CONFIG = """\
# A runnable example: {what}.
# Run it with:  finetuning {method} {{dir}}/{file}
method: {method}
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {{dir}}/data/{data}
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.1
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: {{dir}}/checkpoints-{method}
  logging_dir: {{dir}}/logs-{method}
  learning_rate: 5.0e-4
{extra}  num_train_epochs: 1
  max_length: 256
  max_prompt_length: 128
  logging_steps: 5
  eval_strategy: epoch
  save_strategy: epoch
  bf16: false
batchsize_conf:
  total_train_batch_size: 16
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: NO_PEFT
run_conf:
  model: {{dir}}/model
  resume_from_checkpoint: auto
"""

#: file name -> config text (with ``{dir}``) of each preference method's example.
PREFERENCE_CONFIGS = {
    file: PREFERENCE_CONFIG.format(file=file, method=method, data=data, what=what, extra=extra)
    for file, method, data, what, extra in _PREFERENCE_EXAMPLES
}

GRPO_CONFIG = """\
# A runnable example: GRPO (online RL from rewards) of the tiny model on one-digit sums.
# Run it with:  finetuning grpo {dir}/grpo.yaml
# exact_answer scores 1 when the completion's last \\boxed{{...}} (else its last line) equals the
# row's `answer`; the untrained random model almost never gets one right, so its mean stays near 0
# here, while the small length reward varies between completions and gives the policy a gradient.
# Sampled completions with their rewards land in checkpoints-grpo/completions.jsonl.
method: grpo
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {dir}/data/arithmetic.jsonl
  validation_data:
    type: NONE
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: {dir}/checkpoints-grpo
  logging_dir: {dir}/logs-grpo
  learning_rate: 1.0e-3
  max_steps: 30
  num_generations: 4
  max_completion_length: 16
  temperature: 1.0
  beta: 0.04
  logging_steps: 1
  save_strategy: steps
  save_steps: 10
  bf16: false
batchsize_conf:
  total_train_batch_size: 4  # prompts per step; x num_generations = 16 completions
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: NO_PEFT
run_conf:
  model: {dir}/model
  resume_from_checkpoint: auto
grpo_args:
  rewards:
  - function: exact_answer
    weight: 1.0
  - function: length
    weight: 0.2
    kwargs: {{target: 24, unit: chars}}
"""

REWARD_CONFIG = """\
# A runnable example: a reward model (a score head on the tiny model, LoRA) trained to score
# the chosen answers of the preference data above the rejected ones.
# Run it with:  finetuning reward {dir}/reward.yaml
# then score:   finetuning score --model {dir}/model \\
#                 --adapter {dir}/checkpoints-reward/checkpoint-final \\
#                 --input {dir}/data/preferences.jsonl --output scores.jsonl
method: reward
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {dir}/data/preferences.jsonl
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.1
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: {dir}/checkpoints-reward
  logging_dir: {dir}/logs-reward
  learning_rate: 5.0e-3
  num_train_epochs: 1
  max_length: 256
  logging_steps: 5
  eval_strategy: epoch
  save_strategy: epoch
  bf16: false
batchsize_conf:
  total_train_batch_size: 16
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: LORA
  task_type: SEQ_CLS  # the score head trains in full beside the adapter
  peft_kwargs:
    r: 8
    lora_alpha: 16
    target_modules: [q_proj, k_proj, v_proj, o_proj]
run_conf:
  model: {dir}/model
  resume_from_checkpoint: auto
"""

PRETRAIN_CONFIG = """\
# A runnable example: continued pretraining of the tiny model on raw text documents
# (no chat template; documents longer than max_seq_length are split into chunks).
# Run it with:  finetuning pretrain {dir}/pretrain.yaml
method: pretrain
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {dir}/data/documents.jsonl
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.05
training_args:
  output_dir: {dir}/checkpoints-pretrain
  logging_dir: {dir}/logs-pretrain
  learning_rate: 2.0e-3
  num_train_epochs: 1
  lr_scheduler_type: cosine
  warmup_ratio: 0.05
  logging_steps: 10
  eval_strategy: epoch
  save_strategy: epoch
  bf16: false
batchsize_conf:
  total_train_batch_size: 16
  max_per_device_train_batch_size: 16
peft_conf:
  peft_type: NO_PEFT
run_conf:
  model: {dir}/model
  resume_from_checkpoint: auto
sft_args:
  max_seq_length: 64
  length_handling: chunk
"""

GENERATE_CONFIG = """\
# Answers from the trained SFT model for the prompts of the preference data.
# Run it after the SFT example with:  finetuning generate {dir}/generate.yaml answers.yaml
model_conf:
  model: {dir}/checkpoints/checkpoint-final
prompt_conf:
  type: eval-data
  data:
    path: {dir}/data/prompts.jsonl
hf_gen_params:
  max_new_tokens: 64
  do_sample: false
"""

MANIFEST = ".finetuning-example.json"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _changed(directory: Path) -> list[str] | None:
    """Files of the example that differ from what ``init`` wrote (None: not an ``init`` example)."""
    manifest = directory / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return None
    changed = []
    for name, digest in recorded.items():
        path = directory / name
        if not path.is_file() or _digest(path) != digest:
            changed.append(name)
    return changed


def _check_folder(directory: Path) -> None:
    """Refuse a path that is, or lies under, something other than a folder (even with --force).

    Raises:
        UserError: ``directory`` or the nearest of its parents that exists is not a folder.
    """
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == directory else f"is under {existing}, a file"
        raise UserError(f"{directory} {what}, not a folder: choose a new folder for the example")


def init_example(directory: str | Path, rows: int = 2000, force: bool = False) -> Path:
    """Write the example into ``directory`` and print how to run it.

    Args:
        directory: The folder to write (created if needed).
        rows: Rows of synthetic chat data (the preference data has a quarter of them).
        force: Rewrite the example's files even when the folder holds something else or a
            changed example (files ``init`` did not write, such as checkpoints, are kept).

    Returns:
        The SFT config's path.

    Raises:
        UserError: ``directory`` holds something other than an unchanged example, without force.
    """
    directory = Path(directory).resolve()
    _check_folder(directory)
    config = directory / "sft.yaml"
    run_hint = (
        f"train it with:\n  finetuning sft {config}\n  finetuning dpo {directory / 'dpo.yaml'}"
        + "".join(
            f"\n  finetuning {name.removesuffix('.yaml')} {directory / name}"
            for name in PREFERENCE_CONFIGS
        )
        + f"\n  finetuning grpo {directory / 'grpo.yaml'}"
        f"\n  finetuning reward {directory / 'reward.yaml'}"
        f"\n  finetuning pretrain {directory / 'pretrain.yaml'}"
    )
    if not force and directory.exists() and any(directory.iterdir()):
        changed = _changed(directory)
        if changed is None:
            raise UserError(
                f"{directory} exists and is not empty (and is not an example written by "
                "`finetuning init`): choose a new folder, or add --force to write the example "
                "into it anyway"
            )
        if changed:
            raise UserError(
                f"{directory}: the example was changed since `finetuning init` wrote it "
                f"({', '.join(changed)}): train it as it is, or add --force to rewrite the "
                "example's files (your changes to them are lost; checkpoints are kept)"
            )
        print(f"{directory} already holds the unchanged example; left it alone. {run_hint}")
        return config
    build_model(directory / "model", "llama", hidden_size=128, num_layers=2)
    data = directory / "data"
    written = [p for p in (directory / "model").rglob("*") if p.is_file()]
    preferences = synthetic_preferences(max(rows // 4, 16), seed=1)
    # The prompts with their reference answers (generate records them as correct_answers).
    prompts = [
        {
            "id": str(i),
            "prompt_messages": row["prompt_messages"],
            "chosen_messages": row["chosen_messages"],
        }
        for i, row in enumerate(preferences[:8])
    ]
    written += [
        write_jsonl(data / "train.jsonl", synthetic_chats(rows, seed=0)),
        write_jsonl(data / "preferences.jsonl", preferences),
        write_jsonl(data / "prompts.jsonl", prompts),
        write_jsonl(data / "arithmetic.jsonl", synthetic_arithmetic(128, seed=2)),
        write_jsonl(data / "feedback.jsonl", synthetic_feedback(max(rows // 4, 16), seed=2)),
        write_jsonl(data / "documents.jsonl", synthetic_documents(max(rows // 4, 16), seed=2)),
    ]
    for name, text in (
        ("sft.yaml", EXAMPLE_CONFIG),
        ("dpo.yaml", DPO_CONFIG),
        ("grpo.yaml", GRPO_CONFIG),
        ("reward.yaml", REWARD_CONFIG),
        ("pretrain.yaml", PRETRAIN_CONFIG),
        ("generate.yaml", GENERATE_CONFIG),
        *PREFERENCE_CONFIGS.items(),
    ):
        (directory / name).write_text(text.format(dir=directory))
        written.append(directory / name)
    files = sorted(written)
    manifest = {"files": {str(p.relative_to(directory)): _digest(p) for p in files}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote an example into {directory}; {run_hint}")
    return config
