"""Where one SFT optimizer step spends its time: our engine against TRL padding-free, same batches.

Usage:
    python benchmarks/profile_step.py [--size 3m] [--steps 4] [--warmup 2] [--systems ours,trl_pf]

Builds the benchmark's model and data (see run.py) and runs each system in its own process
(``trainer_child.py``) for ``warmup + steps + 1`` optimizer steps. Steps ``warmup`` ..
``warmup + steps - 1`` run under ``torch.profiler`` (everything between the start of their first
micro-batch and the start of the next step's: data loading, forward, backward, optimizer,
callbacks). It prints, per system, the wall time per step and the operators with the largest
share of the self CPU time, and the Python-level split (cProfile) of the same steps.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3m")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--systems", default="ours,trl_pf")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import SIZES, synthetic_lengths, write_data

    from finetuning.testing import build_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hidden, layers, heads, intermediate = SIZES[args.size]
        model = build_model(
            workdir / "model", "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=intermediate,
        )  # fmt: skip
        data = workdir / "chats.jsonl"
        write_data(data, synthetic_lengths(args.rows, 0, 69, 0.81, 779), seed=0)
        for system in args.systems.split(","):
            spec = {
                "model": str(model), "data": str(data), "device": "cpu",
                "steps": args.warmup + args.steps + 1, "batch": args.batch, "lr": 1e-4,
                "max_length": 2048, "attn": "sdpa", "cache": str(workdir / "cache"),
                "out": str(workdir / f"{system}-out"),
                "profile": {"first": args.warmup, "steps": args.steps, "top": args.top,
                            "file": str(workdir / f"{system}-profile.txt")},
            }  # fmt: skip
            spec_path, result = workdir / f"{system}.json", workdir / f"{system}-result.json"
            spec_path.write_text(json.dumps(spec))
            subprocess.run(
                [sys.executable, str(HERE / "trainer_child.py"), system, str(spec_path), str(result)],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            print(f"## {system}\n")
            print(Path(spec["profile"]["file"]).read_text())


if __name__ == "__main__":
    main()
