"""Where the time to the first optimizer step goes, phase by phase (our SFT recipe).

Usage:
    python benchmarks/startup.py [--repeats 3]

Builds the benchmark's model and data (see run.py), then runs ``finetuning``'s SFT recipe for one
optimizer step in a fresh process, several times (the first run also fills the data cache; the
others read it, as a re-run of the same config does). The child wraps the recipe's stage
functions to time them; nothing in the engine is changed for the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHASES = [
    ("imports", "python start -> recipe start (torch, transformers, peft, accelerate...)"),
    (
        "start",
        "stages.start without its data side: batch sizes, hardware, outputs, resume, tracking",
    ),
    ("tokenizer", "tokenizer load and setup"),
    ("data", "data preparation (encode, or read the cache)"),
    ("preflight", "the data preflight report"),
    ("model", "model load (+ resize, adapter)"),
    ("packing_check", "packed-vs-separate check (and attention choice)"),
    ("trainer", "Trainer construction"),
    ("first_step", "train() up to the end of the first optimizer step"),
]


def _child(spec_path: str, result_path: str) -> None:
    import psutil

    process_start = psutil.Process().create_time()
    marks: dict[str, float] = {}

    def timed(module, name, key):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            started = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                marks[key] = marks.get(key, 0.0) + time.time() - started

        setattr(module, name, wrapper)

    import finetuning  # noqa: F401  first, as `finetuning sft` starts (its import finder is set)

    sys.path.insert(0, str(HERE))
    import trainer_child
    from transformers import Trainer

    from finetuning.config.loading import load_config_dict
    from finetuning.data import preflight
    from finetuning.model import attention
    from finetuning.train import stages
    from finetuning.train.methods import sft

    marks["imports"] = time.time() - process_start
    # stages.start builds the plan, whose data side (tokenizer, data, preflight report) runs
    # in finetuning.data.preflight; "start" below is what remains of it.
    timed(stages, "start", "start_total")
    timed(preflight, "load_tokenizer", "tokenizer")
    timed(preflight, "setup_tokenizer", "tokenizer")
    timed(preflight, "prepare_data", "data")
    timed(preflight, "build_report", "preflight")
    timed(stages, "prepare_model", "model")
    timed(sft, "keeps_examples_apart", "packing_check")
    timed(attention, "choose", "packing_check")
    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        started = time.time()
        original_init(self, *args, **kwargs)
        marks["trainer"] = time.time() - started
        marks["train_start"] = time.time()

    Trainer.__init__ = init
    original_step = Trainer.training_step

    def step(self, *args, **kwargs):
        loss = original_step(self, *args, **kwargs)
        marks.setdefault("first_step", time.time() - marks["train_start"])
        marks.setdefault("total_to_first_step", time.time() - process_start)
        return loss

    Trainer.training_step = step
    spec = json.loads(Path(spec_path).read_text())
    config = {**trainer_child._common_config(spec), "sft_args": {"max_seq_length": 2048}}
    sft.run(load_config_dict(config, "sft"))
    marks.pop("train_start")
    nested = sum(marks.get(k, 0.0) for k in ("tokenizer", "data", "preflight"))
    marks["start"] = marks.pop("start_total") - nested
    Path(result_path).write_text(json.dumps(marks))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(*sys.argv[2:4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=480)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import SIZES, synthetic_lengths, write_data

    from finetuning.testing import build_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hidden, layers, heads, intermediate = SIZES["small"]
        model = build_model(
            workdir / "model", "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=intermediate,
        )  # fmt: skip
        data = workdir / "chats.jsonl"
        write_data(data, synthetic_lengths(args.rows, 0, 69, 0.81, 779), seed=0)
        runs = []
        for repeat in range(args.repeats):
            spec = {
                "model": str(model), "data": str(data), "device": "cpu", "steps": 1, "batch": 8,
                "lr": 1e-4, "attn": "sdpa", "out": str(workdir / f"out-{repeat}"),
            }  # fmt: skip
            spec_path, result = workdir / "spec.json", workdir / f"result-{repeat}.json"
            spec_path.write_text(json.dumps(spec))
            env_cache = {"FINETUNING_CACHE_DIR": str(workdir / "cache")}
            subprocess.run(
                [sys.executable, __file__, "--child", str(spec_path), str(result)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env={**os.environ, **env_cache},
            )  # fmt: skip
            runs.append(json.loads(result.read_text()))
        header = " | ".join(f"run {i + 1}" for i in range(len(runs)))
        lines = [
            f"| phase | {header} | what |",
            "|---|" + "---|" * len(runs) + "---|",
        ]
        for key, what in PHASES:
            cells = " | ".join(f"{r.get(key, 0.0):.2f}" for r in runs)
            lines.append(f"| {key} | {cells} | {what} |")
        cells = " | ".join(f"**{r['total_to_first_step']:.2f}**" for r in runs)
        lines.append(f"| **to first step** | {cells} | process start to end of first step |")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
