"""`finetuning init DIR`: a runnable example with a tiny local model, data and config."""

from __future__ import annotations

import logging
from pathlib import Path

from finetuning.errors import UserError
from finetuning.testing import build_model, synthetic_chats, write_jsonl

logger = logging.getLogger(__name__)

EXAMPLE_CONFIG = """\
# A runnable example: full fine-tuning of a tiny local Llama-style model on synthetic chats.
# Run it with:  finetuning sft {dir}/sft.yaml
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


def init_example(directory: str | Path, rows: int = 2000) -> Path:
    """Write the example into ``directory`` and print how to run it.

    Raises:
        UserError: ``directory`` exists and is not empty.
    """
    directory = Path(directory).resolve()
    if directory.exists() and any(directory.iterdir()):
        raise UserError(f"{directory} exists and is not empty: choose a new folder")
    build_model(directory / "model", "llama", hidden_size=128, num_layers=2)
    write_jsonl(directory / "data" / "train.jsonl", synthetic_chats(rows, seed=0))
    config = directory / "sft.yaml"
    config.write_text(EXAMPLE_CONFIG.format(dir=directory))
    print(f"wrote an example into {directory}; train it with:\n  finetuning sft {config}")
    return config
