"""Preprocessing throughput: rows/s with 1 and N workers, cold and cached, and peak memory.

Usage: python benchmarks/preprocess.py [--rows 100000] [--workers 1 2] [--out FILE.md]

Builds the tiny local tokenizer, writes synthetic conversations, and runs the engine's own
preparation (read, render with the chat-ml template, tokenise with loss masks, cache) in a fresh
subprocess per measurement, so each cold run really is cold and the peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
from finetuning.config.loading import load_config_dict
from finetuning.data.preflight import encode_settings
from finetuning.data.prepare import prepare_data
from finetuning.data.tokenizer import load_tokenizer, setup_tokenizer
raw, workers = json.loads(sys.argv[1]), int(sys.argv[2])
config = load_config_dict(raw, "sft").config
setup = setup_tokenizer(config, load_tokenizer(config))
start = time.perf_counter()
data = prepare_data(config.data_conf, setup.tokenizer, encode_settings(config), "sft", workers)
seconds = time.perf_counter() - start
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "rows": len(data.rows), "hit": data.cache_hit,
                  "peak_rss_mb": max(own, children) / 1024}))
"""


def measure(raw: dict, workers: int, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(raw), str(workers)],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import os

    from finetuning.testing import build_tokenizer, synthetic_chats, write_jsonl

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_tokenizer(tmp / "tok")
        (tmp / "tok" / "config.json").write_text(json.dumps({"model_type": "llama"}))
        data = write_jsonl(tmp / "chats.jsonl", synthetic_chats(args.rows, seed=0))
        raw = {
            "data_conf": {
                "training_data": {"type": "CONCATENATION", "datasets": [{"path": str(data)}]},
                "chat_template_name": "chat-ml",
            },
            "training_args": {},
            "batchsize_conf": {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8},
            "peft_conf": {"peft_type": "NO_PEFT"},
            "run_conf": {"model": str(tmp / "tok")},
            "sft_args": {"max_seq_length": 2048, "train_on_completions_only": True},
        }
        rows = ["| workers | run | seconds | rows/s | peak RSS (MB) |", "|---|---|---|---|---|"]
        for workers in args.workers:
            env = {**os.environ, "FINETUNING_CACHE_DIR": str(tmp / f"cache-{workers}")}
            for label in ("cold", "cached"):
                r = measure(raw, workers, env)
                assert r["hit"] == (label == "cached"), r
                rows.append(
                    f"| {workers} | {label} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} "
                    f"| {r['peak_rss_mb']:.0f} |"
                )
        table = "\n".join([f"Preprocessing {args.rows:,} synthetic conversations (chat-ml, "
                           "completions-only masks):", "", *rows])  # fmt: skip
        print(table)
        if args.out:
            args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
