"""The benchmark suite: our engine against a plain TRL SFTTrainer, in one run, on the same inputs.

Usage:
    python benchmarks/run.py                      # CPU: ~20M-parameter Llama, ~15 minutes on 2 cores
    python benchmarks/run.py --device cuda --size 1b --steps 30   # GPU: ~1B parameters, reports MFU
    python benchmarks/run.py --out docs/performance.md           # also write the Markdown table

It builds a Llama-style model and a tokenizer locally (nothing is downloaded), writes synthetic
chats whose lengths follow a log-normal distribution (median ~250 tokens, tail to 2,048), then
runs each system in its own process for the same number of optimizer steps with the same batch
size, and reports: trained (non-padding) tokens/s and the ratio, the share of computed tokens
that are padding, peak RSS, time to the first optimizer step, preprocessing rows/s (cold and
cached), and the achieved FLOP/s as a fraction of this machine's matmul peak measured in the
same run (6 x parameters x real tokens per step, an estimate that ignores attention FLOPs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = {
    # name: (hidden, layers, heads, intermediate)
    "small": (512, 6, 8, 1408),  # ~20M parameters with the 1k vocabulary
    "1b": (2048, 16, 16, 5632),  # ~1B parameters
}


def synthetic_lengths(n: int, seed: int, median: int = 250, sigma: float = 0.8, cap: int = 2048):
    rng = random.Random(seed)
    return [max(16, min(cap, int(math.exp(rng.gauss(math.log(median), sigma))))) for _ in range(n)]


def write_data(path: Path, n: int, seed: int) -> None:
    """Chats whose total token count follows the log-normal lengths (~1 token per word here)."""
    from finetuning.testing import WORDS, write_jsonl

    rng = random.Random(seed)
    rows = []
    for length in synthetic_lengths(n, seed):
        user = max(4, length // 4)
        answer = max(4, length - user - 12)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(user))},
                    {
                        "role": "assistant",
                        "content": " ".join(rng.choice(WORDS) for _ in range(answer)),
                    },
                ]
            }
        )
    write_jsonl(path, rows)


def matmul_peak(device: str) -> float:
    """Measured FLOP/s of a large matrix multiply (fp32 on CPU, bf16 on GPU)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    repeats = 20 if device == "cuda" else 5
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - started)


def preprocessing(spec: dict) -> tuple[float, float]:
    """Our preprocessing rows/s, cold then cached (fresh cache folder)."""
    from finetuning.config.loading import load_config_dict
    from finetuning.data.preflight import encode_settings
    from finetuning.data.prepare import prepare_data
    from finetuning.data.tokenizer import load_tokenizer, setup_tokenizer

    raw = {
        "data_conf": {
            "training_data": {"type": "CONCATENATION", "datasets": [{"path": spec["data"]}]},
            "chat_template_name": "keep-original",
        },
        "training_args": {},
        "batchsize_conf": {"total_train_batch_size": 8, "max_per_device_train_batch_size": 8},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": spec["model"]},
        "sft_args": {"max_seq_length": spec["max_length"]},
    }
    config = load_config_dict(raw, "sft").config
    setup = setup_tokenizer(config, load_tokenizer(config))
    os.environ["FINETUNING_CACHE_DIR"] = tempfile.mkdtemp()
    rates = []
    for _ in range(2):
        data = prepare_data(config.data_conf, setup.tokenizer, encode_settings(config), "sft")
        rates.append(len(data.rows) / data.seconds)
    return rates[0], rates[1]


def run_child(system: str, spec: dict, workdir: Path) -> dict:
    spec_path = workdir / f"{system}-spec.json"
    result_path = workdir / f"{system}-result.json"
    spec_path.write_text(json.dumps({**spec, "out": str(workdir / f"{system}-out")}))
    subprocess.run(
        [sys.executable, str(HERE / "trainer_child.py"), system, str(spec_path), str(result_path)],
        check=True, stdout=subprocess.DEVNULL, stderr=(workdir / f"{system}.log").open("w"),
    )  # fmt: skip
    return json.loads(result_path.read_text())


def summarize(record: dict, warmup: int, params: int, peak: float) -> dict:
    ends, real, computed = record["ends"], record["real"], record["computed"]
    span = ends[-1] - ends[warmup - 1]
    real_after = sum(real[warmup:])
    tokens_per_s = real_after / span
    return {
        "tokens_per_s": tokens_per_s,
        "padding_share": 1 - sum(real) / sum(computed),
        "peak_rss_mb": record["peak_rss_mb"],
        "first_step_s": record["first_step"],
        "flops_fraction": 6 * params * tokens_per_s / peak,
        "peak_gpu_mb": record.get("peak_gpu_mb"),
    }


def table(results: dict, meta: dict) -> str:
    ours, trl = results["ours"], results["trl"]
    rows = [
        ("trained (non-padding) tokens/s", f"{ours['tokens_per_s']:,.0f}", f"{trl['tokens_per_s']:,.0f}",
         f"{ours['tokens_per_s'] / trl['tokens_per_s']:.2f}x"),
        ("padding share of computed tokens", f"{ours['padding_share']:.1%}", f"{trl['padding_share']:.1%}", ""),
        ("peak RSS (MB)", f"{ours['peak_rss_mb']:,.0f}", f"{trl['peak_rss_mb']:,.0f}",
         f"{ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}x"),
        ("time to first optimizer step (s)", f"{ours['first_step_s']:.1f}", f"{trl['first_step_s']:.1f}",
         f"{ours['first_step_s'] / trl['first_step_s']:.2f}x"),
        ("achieved FLOP/s / measured matmul peak", f"{ours['flops_fraction']:.1%}", f"{trl['flops_fraction']:.1%}", ""),
    ]  # fmt: skip
    if ours.get("peak_gpu_mb"):
        rows.append(
            (
                "peak GPU memory (MB)",
                f"{ours['peak_gpu_mb']:,.0f}",
                f"{trl['peak_gpu_mb']:,.0f}",
                "",
            )
        )
    lines = [
        f"Model: Llama-style, {meta['params'] / 1e6:.1f}M parameters, {meta['device']} "
        f"({meta['machine']}); data: {meta['rows']} chats, log-normal lengths (median "
        f"{meta['median']} tokens, max {meta['max']}); {meta['steps']} optimizer steps of "
        f"{meta['batch']} examples, first {meta['warmup']} excluded from throughput; matmul peak "
        f"{meta['peak'] / 1e9:,.0f} GFLOP/s measured in the same run.",
        "",
        "| metric | finetuning | TRL SFTTrainer (default padding) | ratio |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Preprocessing (ours, {meta['rows']} chats): {meta['pre_cold']:,.0f} rows/s cold, "
        f"{meta['pre_cached']:,.0f} rows/s cached. TRL dataset preparation inside SFTTrainer: "
        f"{meta['trl_setup']:.1f} s ({meta['rows'] / meta['trl_setup']:,.0f} rows/s, with model setup).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()

    from finetuning.testing import build_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hidden, layers, heads, intermediate = SIZES[args.size]
        model_dir = build_model(
            workdir / "model", "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=intermediate,
        )  # fmt: skip
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir)
        params = _count_params(config)
        data = workdir / "chats.jsonl"
        write_data(data, args.rows, seed=0)
        lengths = synthetic_lengths(args.rows, 0)
        spec = {
            "model": str(model_dir), "data": str(data), "device": args.device, "steps": args.steps,
            "batch": args.batch, "lr": 1e-4, "max_length": 2048, "attn": args.attn,
            "cache": str(workdir / "cache"),
        }  # fmt: skip
        peak = matmul_peak(args.device)
        pre_cold, pre_cached = preprocessing(spec)
        raw = {system: run_child(system, spec, workdir) for system in ("ours", "trl")}
        results = {k: summarize(v, args.warmup, params, peak) for k, v in raw.items()}
        meta = {
            "params": params, "device": args.device, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "rows": args.rows, "median": sorted(lengths)[len(lengths) // 2], "max": max(lengths),
            "steps": args.steps, "batch": args.batch, "warmup": args.warmup, "peak": peak,
            "pre_cold": pre_cold, "pre_cached": pre_cached, "trl_setup": raw["trl"]["trl_setup_seconds"],
        }  # fmt: skip
        text = table(results, meta)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")


def _count_params(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
