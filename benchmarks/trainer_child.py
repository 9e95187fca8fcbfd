"""One measured training run in its own process (called by benchmarks/run.py).

Usage: python benchmarks/trainer_child.py SYSTEM SPEC.json RESULT.json

SYSTEM is one of ``ours`` / ``trl`` / ``trl_pf`` (SFT: our engine, TRL's SFTTrainer padded, TRL's
SFTTrainer with ``padding_free=True``) or ``ours_dpo`` / ``trl_dpo`` (DPO: our packed DPO, TRL's
DPOTrainer padded). All train the same local model on the same data with the same batch size and
learning rate, and save the final model at the end. ``Trainer.training_step`` is wrapped to record, for every micro-batch, the tokens
computed (the input tensor's size, padding included), the real tokens, the sum of the squared
example lengths (for attention FLOPs) and the step's end time.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path

import psutil

PROCESS_START = psutil.Process().create_time()


def example_lengths(inputs: dict) -> list[int]:
    """The real sequences' lengths in a micro-batch (packed rows or padded rows)."""
    cu = inputs.get("cu_seq_lens_q")
    if cu is not None:
        cu = cu.tolist()
        return [b - a for a, b in itertools.pairwise(cu)]
    mask = inputs.get("attention_mask")
    if mask is not None:
        return [int(n) for n in mask.sum(1).tolist()]
    positions = inputs.get("position_ids")
    if positions is not None:
        starts = [*(positions[0] == 0).nonzero().flatten().tolist(), positions.shape[1]]
        return [b - a for a, b in itertools.pairwise(starts)]
    ids = inputs["input_ids"]
    return [ids.shape[1]] * ids.shape[0]


class StepProfiler:
    """torch.profiler and cProfile over whole optimizer steps ``first`` .. ``first + steps - 1``.

    Started at the start of step ``first``'s micro-batch and stopped at the start of step
    ``first + steps``'s, so data loading, optimizer and callbacks of the profiled steps are in.
    """

    def __init__(self, first: int, steps: int, top: int, file: str):
        self.first, self.steps, self.top, self.file = first, steps, top, file
        self.calls = 0
        self.torch_prof = None
        self.py_prof = None
        self.started = 0.0

    def before_step(self) -> None:
        import cProfile

        import torch

        if self.calls == self.first:
            self.torch_prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU]
            )
            self.torch_prof.__enter__()
            self.py_prof = cProfile.Profile()
            self.started = time.perf_counter()
            self.py_prof.enable()
        elif self.calls == self.first + self.steps and self.torch_prof is not None:
            self.py_prof.disable()
            wall = time.perf_counter() - self.started
            self.torch_prof.__exit__(None, None, None)
            self._write(wall)
            self.torch_prof = None
        self.calls += 1

    def _write(self, wall: float) -> None:
        import io
        import pstats

        table = self.torch_prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=self.top, max_name_column_width=60
        )
        stream = io.StringIO()
        stats = pstats.Stats(self.py_prof, stream=stream)
        stats.sort_stats("cumulative").print_stats(45)
        Path(self.file).write_text(
            f"wall per step: {wall / self.steps * 1000:.1f} ms ({self.steps} steps)\n\n"
            f"{table}\n\ncProfile (cumulative; profiler overhead included):\n"
            f"{stream.getvalue()}"
        )


#: Set by main(); each system instruments the Trainer after its own imports, so the harness
#: imports nothing a system would not (the time to the first step includes exactly its imports).
PROFILER: StepProfiler | None = None


def instrument(record: dict, profiler: StepProfiler | None = None) -> None:
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        if profiler is not None:
            profiler.before_step()
        lengths = example_lengths(inputs)
        loss = original(self, model, inputs, *args, **kwargs)
        real = sum(lengths)
        record["computed"].append(inputs["input_ids"].numel())
        record["real"].append(real)
        record["squares"].append(sum(n * n for n in lengths))
        record["ends"].append(time.time())
        if record["first_step"] is None:
            record["first_step"] = time.time() - PROCESS_START
        return loss

    Trainer.training_step = training_step


def _common_config(spec: dict) -> dict:
    return {
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
    }  # fmt: skip


def run_ours(spec: dict, record: dict) -> None:
    from finetuning.config.loading import load_config_dict
    from finetuning.train.methods import sft

    instrument(record, PROFILER)
    config = {**_common_config(spec), "sft_args": {"max_seq_length": spec["max_length"]}}
    summary = sft.run(load_config_dict(config, "sft"))
    record["attention"] = summary.attention


def run_ours_dpo(spec: dict, record: dict) -> None:
    from finetuning.config.loading import load_config_dict
    from finetuning.train.methods import dpo

    instrument(record, PROFILER)
    config = _common_config(spec)
    config["training_args"].update(
        # DPOConfig turns activation checkpointing on by default; off here as for the TRL run.
        {
            "max_length": spec["max_length"],
            "beta": 0.1,
            "loss_type": ["sigmoid"],
            "activation_checkpointing": False,
        }
    )
    config["data_conf"]["training_data"]["datasets"][0]["path"] = spec["dpo_data"]
    summary = dpo.run(load_config_dict(config, "dpo"))
    record["attention"] = summary.attention


def _model_and_tokenizer(spec: dict):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    tokenizer.pad_token = tokenizer.bos_token
    dtype = torch.bfloat16 if spec["device"] == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=dtype, attn_implementation=spec["attn"]
    )
    if spec["device"] == "cuda":
        model = model.cuda()
    return model, tokenizer


def run_trl(spec: dict, record: dict, padding_free: bool = False) -> None:
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    instrument(record, PROFILER)
    model, tokenizer = _model_and_tokenizer(spec)
    args = SFTConfig(
        output_dir=spec["out"], learning_rate=spec["lr"], max_steps=spec["steps"], logging_steps=1,
        save_strategy="no", report_to=[], per_device_train_batch_size=spec["batch"],
        use_cpu=spec["device"] == "cpu", bf16=spec["device"] == "cuda", seed=0,
        # TRL refuses max_length with padding_free (it cannot enforce it without packing); the
        # data is generated within max_length, so both see the same examples.
        max_length=None if padding_free else spec["max_length"], padding_free=padding_free,
        dataloader_num_workers=0, activation_checkpointing=False,
    )  # fmt: skip
    dataset = load_dataset("json", data_files=spec["data"], split="train")
    started = time.perf_counter()
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    record["trl_setup_seconds"] = time.perf_counter() - started
    trainer.train()
    trainer.save_model()  # the final model, as our recipe saves it (and a user script would)


def run_trl_dpo(spec: dict, record: dict) -> None:
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    instrument(record, PROFILER)
    model, tokenizer = _model_and_tokenizer(spec)
    args = DPOConfig(
        output_dir=spec["out"], learning_rate=spec["lr"], max_steps=spec["steps"], logging_steps=1,
        save_strategy="no", report_to=[], per_device_train_batch_size=spec["batch"],
        use_cpu=spec["device"] == "cpu", bf16=spec["device"] == "cuda", seed=0,
        max_length=spec["max_length"], dataloader_num_workers=0, beta=0.1, loss_type=["sigmoid"],
        activation_checkpointing=False,
    )  # fmt: skip
    dataset = load_dataset("json", data_files=spec["trl_dpo_data"], split="train")
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trainer.save_model()  # the final model, as our recipe saves it (and a user script would)


SYSTEMS = {
    "ours": run_ours,
    "trl": run_trl,
    "trl_pf": lambda spec, record: run_trl(spec, record, padding_free=True),
    "ours_dpo": run_ours_dpo,
    "trl_dpo": run_trl_dpo,
}


def main() -> None:
    system, spec_path, result_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):  # the same intra-op thread count for every system of a run
        import torch

        torch.set_num_threads(spec["threads"])
    os.environ.setdefault("FINETUNING_CACHE_DIR", spec["cache"])
    record = {"computed": [], "real": [], "squares": [], "ends": [], "first_step": None}
    profile = spec.get("profile")
    global PROFILER
    PROFILER = StepProfiler(**profile) if profile else None
    SYSTEMS[system](spec, record)
    if system == "ours_dpo" and set(record["attention"]) & {
        "per-example sdpa",
        "varlen_attn (CUDA)",
    }:
        # Packed DPO receives TRL's padded batch but runs only its real tokens, in one row.
        record["computed"] = list(record["real"])
    record["total_seconds"] = time.time() - PROCESS_START
    record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if spec["device"] == "cuda":
        import torch

        record["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(result_path).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
