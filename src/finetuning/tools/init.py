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
from dataclasses import dataclass
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

#: Every method's example config: one template, filled from :data:`EXAMPLES`. The result keeps
#: ``{dir}`` (the example's folder) for ``init_example`` to fill in.
CONFIG_TEMPLATE = """\
# A runnable example: {what}.
# Run it with:  finetuning {method} {{dir}}/{file}
{notes}method: {method}
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
    - path: {{dir}}/data/{data}
  validation_data:
{validation}{template}training_args:
  output_dir: {{dir}}/checkpoints{suffix}
  logging_dir: {{dir}}/logs{suffix}
{training}  bf16: false{bf16_note}
batchsize_conf:
  total_train_batch_size: {total}
  max_per_device_train_batch_size: 16
peft_conf:
{peft}run_conf:
  model: {{dir}}/model
  resume_from_checkpoint: auto
{section}"""

_CHAT_TEMPLATE = "  chat_template_name: chat-ml\n  missing_pad_token_strategy: bos-repurpose\n"
_SPLIT = "    type: AUTO_SPLIT\n    ratio: {}\n"
#: The preference methods' shared training_args (their own arguments come first).
_PREFERENCE_TRAINING = """\
  num_train_epochs: 1
  max_length: 256
  max_prompt_length: 128
  logging_steps: 5
  eval_strategy: epoch
  save_strategy: epoch
"""


@dataclass(frozen=True)
class Example:
    """What one method's example config fills into :data:`CONFIG_TEMPLATE`."""

    method: str
    what: str  #: the header's description (more comment lines may follow, each with "# ")
    data: str  #: the data file under ``data/``
    training: str  #: training_args after output_dir and logging_dir (YAML lines)
    notes: str = ""  #: comment lines after "Run it with"
    validation: str = _SPLIT.format(0.1)
    template: str = _CHAT_TEMPLATE  #: the chat template lines (none for raw text)
    suffix: str | None = None  #: of checkpoints-/logs- (default: -method)
    total: str = "16"
    peft: str = "  peft_type: NO_PEFT\n"
    section: str = ""  #: the method's own section (sft_args, grpo_args)
    bf16_note: str = ""

    def render(self, file: str) -> str:
        suffix = f"-{self.method}" if self.suffix is None else self.suffix
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return CONFIG_TEMPLATE.format(**{**fields, "suffix": suffix, "file": file})


def _preference(method: str, data: str, what: str, own: str) -> Example:
    training = f"  learning_rate: 5.0e-4\n{own}{_PREFERENCE_TRAINING}"
    return Example(method, what, data, training)


#: file name -> the example; ``init`` writes one config per entry.
EXAMPLES = {
    "sft.yaml": Example(
        "sft",
        "full fine-tuning of a tiny local Llama-style model on synthetic chats",
        "train.jsonl",
        "  learning_rate: 2.0e-3\n  num_train_epochs: 1\n  lr_scheduler_type: cosine\n"
        "  warmup_ratio: 0.05\n  logging_steps: 10\n  eval_strategy: steps\n  eval_steps: 0.25\n"
        "  save_strategy: steps\n  save_steps: 0.5\n",
        notes="# then:  finetuning generate {dir}/generate.yaml answers.yaml\n",
        validation=_SPLIT.format(0.05),
        suffix="",
        section="sft_args:\n  max_seq_length: 256\n  train_on_completions_only: true\n",
        bf16_note="  # fp32 is several times faster than bf16 on most CPUs",
    ),
    "dpo.yaml": _preference(
        "dpo",
        "preferences.jsonl",
        "direct preference optimisation of the same tiny model (full parameters)",
        "  beta: 0.1\n",
    ),
    "kto.yaml": _preference(
        "kto",
        "feedback.jsonl",
        "KTO from unpaired thumbs-up/thumbs-down feedback (about 2 desirable per undesirable\n"
        "# example, so desirable_weight 0.6 keeps TRL's recommended balance; the preflight shows it)",
        "  beta: 0.1\n  desirable_weight: 0.6\n  undesirable_weight: 1.0\n",
    ),
    "orpo.yaml": _preference(
        "orpo",
        "preferences.jsonl",
        "ORPO on the preference data (no reference model, no SFT stage needed)",
        "  beta: 0.1\n",
    ),
    "simpo.yaml": _preference(
        "simpo",
        "preferences.jsonl",
        "SimPO on the preference data (TRL's CPO trainer with loss_type simpo, cpo_alpha 0;\n"
        "# no reference model)",
        "  beta: 2.0\n  simpo_gamma: 1.0\n",
    ),
    "grpo.yaml": Example(
        "grpo",
        "GRPO (online RL from rewards) of the tiny model on one-digit sums",
        "arithmetic.jsonl",
        "  learning_rate: 1.0e-3\n  max_steps: 30\n  num_generations: 4\n"
        "  max_completion_length: 16\n  temperature: 1.0\n  beta: 0.04\n  logging_steps: 1\n"
        "  save_strategy: steps\n  save_steps: 10\n",
        notes=(
            "# exact_answer scores 1 when the completion's last \\boxed{{...}} (else its last"
            " line) equals the\n# row's `answer`; the untrained random model almost never gets one"
            " right, so its mean stays near 0\n# here, while the small length reward varies between"
            " completions and gives the policy a gradient.\n# Sampled completions with their"
            " rewards land in checkpoints-grpo/completions.jsonl.\n"
        ),
        validation="    type: NONE\n",
        total="4  # prompts per step; x num_generations = 16 completions",
        section=(
            "grpo_args:\n  rewards:\n  - function: exact_answer\n    weight: 1.0\n"
            "  - function: length\n    weight: 0.2\n    kwargs: {{target: 24, unit: chars}}\n"
        ),
    ),
    "reward.yaml": Example(
        "reward",
        "a reward model (a score head on the tiny model, LoRA) trained to score\n"
        "# the chosen answers of the preference data above the rejected ones",
        "preferences.jsonl",
        "  learning_rate: 5.0e-3\n  num_train_epochs: 1\n  max_length: 256\n  logging_steps: 5\n"
        "  eval_strategy: epoch\n  save_strategy: epoch\n",
        notes=(
            "# then score:   finetuning score --model {dir}/model \\\n"
            "#                 --adapter {dir}/checkpoints-reward/checkpoint-final \\\n"
            "#                 --input {dir}/data/preferences.jsonl --output scores.jsonl\n"
        ),
        peft=(
            "  peft_type: LORA\n  task_type: SEQ_CLS  # the score head trains in full beside the"
            " adapter\n  peft_kwargs:\n    r: 8\n    lora_alpha: 16\n"
            "    target_modules: [q_proj, k_proj, v_proj, o_proj]\n"
        ),
    ),
    "pretrain.yaml": Example(
        "pretrain",
        "continued pretraining of the tiny model on raw text documents\n"
        "# (no chat template; documents longer than max_seq_length are split into chunks)",
        "documents.jsonl",
        "  learning_rate: 2.0e-3\n  num_train_epochs: 1\n  lr_scheduler_type: cosine\n"
        "  warmup_ratio: 0.05\n  logging_steps: 10\n  eval_strategy: epoch\n"
        "  save_strategy: epoch\n",
        validation=_SPLIT.format(0.05),
        template="",
        section="sft_args:\n  max_seq_length: 64\n  length_handling: chunk\n",
    ),
}

#: file name -> config text (with ``{dir}``) of every method's example.
CONFIGS = {file: example.render(file) for file, example in EXAMPLES.items()}
#: The preference methods' examples besides DPO (KTO, ORPO, SimPO).
PREFERENCE_CONFIGS = {f: CONFIGS[f] for f in ("kto.yaml", "orpo.yaml", "simpo.yaml")}

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
    for name, text in (*CONFIGS.items(), ("generate.yaml", GENERATE_CONFIG)):
        (directory / name).write_text(text.format(dir=directory))
        written.append(directory / name)
    files = sorted(written)
    manifest = {"files": {str(p.relative_to(directory)): _digest(p) for p in files}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote an example into {directory}; {run_hint}")
    return config
