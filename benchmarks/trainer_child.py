"""One measured training run in its own process (called by benchmarks/run.py).

Usage: python benchmarks/trainer_child.py {ours,trl} SPEC.json RESULT.json

Both systems train the same local model on the same data with the same batch size and learning
rate. ``Trainer.training_step`` is wrapped to count, for every micro-batch, the tokens computed
(the input tensor's size, padding included) and the real tokens (attention mask, or all tokens
when there is no padding), and to time each step.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import psutil

PROCESS_START = psutil.Process().create_time()


def instrument(record: dict) -> None:
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        real = int(mask.sum()) if mask is not None else ids.numel()
        loss = original(self, model, inputs, *args, **kwargs)
        record["computed"].append(ids.numel())
        record["real"].append(real)
        record["ends"].append(time.time())
        if record["first_step"] is None:
            record["first_step"] = time.time() - PROCESS_START
        return loss

    Trainer.training_step = training_step


def run_ours(spec: dict, record: dict) -> None:
    from finetuning.config.loading import load_config_dict
    from finetuning.train import sft

    config = {
        "data_conf": {
            "training_data": {"type": "CONCATENATION", "datasets": [{"path": spec["data"]}]},
            "chat_template_name": "keep-original",
        },
        "training_args": {
            "learning_rate": spec["lr"], "max_steps": spec["steps"], "logging_steps": 1,
            "save_strategy": "no", "output_dir": spec["out"], "report_to": ["none"],
            "use_cpu": spec["device"] == "cpu", "bf16": spec["device"] == "cuda", "seed": 0,
            "dataloader_num_workers": 0,
        },
        "batchsize_conf": {
            "total_train_batch_size": spec["batch"], "max_per_device_train_batch_size": spec["batch"],
        },
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": spec["model"], "model_args": {"attn_implementation": spec["attn"]}},
        "sft_args": {"max_seq_length": spec["max_length"]},
    }  # fmt: skip
    sft.run(load_config_dict(config, "sft"))


def run_trl(spec: dict, record: dict) -> None:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.pad_token = tokenizer.bos_token
    dtype = torch.bfloat16 if spec["device"] == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=dtype, attn_implementation=spec["attn"]
    )
    args = SFTConfig(
        output_dir=spec["out"], learning_rate=spec["lr"], max_steps=spec["steps"], logging_steps=1,
        save_strategy="no", report_to=[], per_device_train_batch_size=spec["batch"],
        use_cpu=spec["device"] == "cpu", bf16=spec["device"] == "cuda", seed=0,
        max_length=spec["max_length"], dataloader_num_workers=0,
        activation_checkpointing=False,
    )  # fmt: skip
    dataset = load_dataset("json", data_files=spec["data"], split="train")
    started = time.perf_counter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    record["trl_setup_seconds"] = time.perf_counter() - started
    trainer.train()


def main() -> None:
    system, spec_path, result_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    os.environ.setdefault("FINETUNING_CACHE_DIR", spec["cache"])
    record = {"computed": [], "real": [], "ends": [], "first_step": None}
    instrument(record)
    started = time.time()
    (run_ours if system == "ours" else run_trl)(spec, record)
    record["total_seconds"] = time.time() - started
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if spec["device"] == "cuda":
        import torch

        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(result_path).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
