"""The benchmark suite: our engine against a plain TRL SFTTrainer, in one run, on the same inputs.

Usage:
    python benchmarks/run.py                      # CPU: ~20M-parameter Llama, ~15 minutes on 2 cores
    python benchmarks/run.py --device cuda --size 1b --steps 30   # GPU: ~1B parameters, reports MFU
    python benchmarks/run.py --out docs/performance.md           # also write the Markdown table

It builds a Llama-style model and a tokenizer locally (nothing is downloaded), writes synthetic
chats whose lengths follow a log-normal distribution (by default median ~69 tokens, p95 ~260,
longest 779), then runs each system in its own process for the same number of optimizer steps
with the same batch size (systems interleaved, ``--repeats`` times), and reports: trained
(non-padding) tokens/s and the ratios, the share of computed tokens that are padding, peak RSS,
time to the first optimizer step, end-to-end time (every system saves its final model),
preprocessing rows/s (cold and cached), and the useful FLOP/s as a fraction of this machine's
matmul peak measured in the same run (6 x parameters per trained token plus attention counted
per example; see ``summarize``). Then a DPO comparison and the scaling rows.
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
    "test": (64, 2, 4, 128),  # the test suite's models (finetuning.testing.build_model)
    "tiny": (128, 2, 4, 256),  # a smoke test of the script; the scaling rows on a busy machine
    "3m": (256, 4, 4, 704),  # ~3.7M parameters, like the model of issue 16's figures
    "small": (512, 6, 8, 1408),  # ~20M parameters with the 1k vocabulary
    "1b": (2048, 16, 16, 5632),  # ~1B parameters
}


def synthetic_lengths(n: int, seed: int, median: int, sigma: float, cap: int) -> list[int]:
    rng = random.Random(seed)
    return [max(8, min(cap, int(math.exp(rng.gauss(math.log(median), sigma))))) for _ in range(n)]


def _words(rng: random.Random, n: int) -> str:
    from finetuning.testing import WORDS

    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_data(path: Path, lengths: list[int], seed: int) -> None:
    """Chats whose total token count follows ``lengths`` (~1 token per word here)."""
    from finetuning.testing import write_jsonl

    rng = random.Random(seed)
    rows = []
    for length in lengths:
        user = max(2, length // 4)
        answer = max(2, length - user - 12)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": _words(rng, user)},
                    {"role": "assistant", "content": _words(rng, answer)},
                ]
            }
        )
    write_jsonl(path, rows)


def write_preferences(ours: Path, trl: Path, lengths: list[int], seed: int) -> None:
    """The same preference pairs in our format and in TRL's conversational format."""
    from finetuning.testing import write_jsonl

    rng = random.Random(seed)
    mine, theirs = [], []
    for length in lengths:
        prompt = [{"role": "user", "content": _words(rng, max(2, length // 3))}]
        chosen = [{"role": "assistant", "content": _words(rng, max(2, length // 2))}]
        rejected = [{"role": "assistant", "content": _words(rng, max(2, length // 3))}]
        mine.append(
            {"prompt_messages": prompt, "chosen_messages": chosen, "rejected_messages": rejected}
        )
        theirs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    write_jsonl(ours, mine)
    write_jsonl(trl, theirs)


def matmul_peak(device: str) -> float:
    """Measured FLOP/s of a large matrix multiply (fp32 on CPU, bf16 on GPU), best of 10.

    The best single multiply, not the mean: on a shared machine the mean measures the other
    load. ``main`` measures it again after every repeat and keeps the highest.
    """
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(10):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


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


def run_child(system: str, spec: dict, workdir: Path, tag: str = "") -> dict:
    name = f"{system}{tag}"
    spec_path = workdir / f"{name}-spec.json"
    result_path = workdir / f"{name}-result.json"
    spec_path.write_text(json.dumps({**spec, "out": str(workdir / f"{name}-out")}))
    with (workdir / f"{name}.log").open("w") as log:
        done = subprocess.run(
            [sys.executable, str(HERE / "trainer_child.py"), system, str(spec_path), str(result_path)],
            stdout=subprocess.DEVNULL, stderr=log, check=False,
        )  # fmt: skip
    if done.returncode:
        tail = (workdir / f"{name}.log").read_text()[-3000:]
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{tail}")
    return json.loads(result_path.read_text())


def summarize(record: dict, warmup: int, model: dict, peak: float, dpo: bool = False) -> dict:
    """Throughput and useful FLOP/s of one run.

    Useful FLOPs per trained token: 6 x parameters (forward + backward), plus 2 x parameters for
    DPO's reference forward. Attention: 4 x layers x hidden x L^2 per example forward over the
    causal half (QK^T and PV), times 3 with the backward pass, plus 1 for the reference forward;
    counted per example (the work that is needed), never over padding or across packed examples.
    """
    ends, real, computed = record["ends"], record["real"], record["computed"]
    span = ends[-1] - ends[warmup - 1]
    real_after = sum(real[warmup:])
    squares_after = sum(record["squares"][warmup:])
    tokens_per_s = real_after / span
    dense = (8 if dpo else 6) * model["params"] * real_after
    attention = (4 if dpo else 3) * 2 * model["layers"] * model["hidden"] * squares_after
    return {
        "tokens_per_s": tokens_per_s,
        "padding_share": 1 - sum(real) / sum(computed),
        "peak_rss_mb": record["peak_rss_mb"],
        "first_step_s": record["first_step"],
        "total_s": record["total_seconds"],
        "flops_fraction": (dense + attention) / span / peak,
        "attention_share": attention / (dense + attention),
        "peak_gpu_mb": record.get("peak_gpu_mb"),
        "attention": ", ".join(record.get("attention") or []) or "transformers sdpa",
    }


def best_of(runs: list[dict]) -> dict:
    """The repeat with the highest throughput (the least disturbed by other load)."""
    return max(runs, key=lambda r: r["tokens_per_s"])


SFT_SYSTEMS = ("ours", "trl_pf", "trl")
SFT_NAMES = {
    "ours": "finetuning",
    "trl_pf": "TRL SFTTrainer padding_free=True",
    "trl": "TRL SFTTrainer (padded)",
}


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else ""


def sft_table(results: dict) -> list[str]:
    ours, pf, padded = (results[k] for k in SFT_SYSTEMS)
    metrics = [
        ("trained (non-padding) tokens/s", "tokens_per_s", "{:,.0f}", True),
        ("end to end (s)", "total_s", "{:.1f}", True),
        ("time to first optimizer step (s)", "first_step_s", "{:.1f}", True),
        ("peak RSS (MB)", "peak_rss_mb", "{:,.0f}", True),
        ("padding share of computed tokens", "padding_share", "{:.1%}", False),
        ("useful FLOP/s / measured matmul peak", "flops_fraction", "{:.1%}", False),
    ]
    if ours.get("peak_gpu_mb"):
        metrics.append(("peak GPU memory (MB)", "peak_gpu_mb", "{:,.0f}", True))
    lines = [
        "| metric | finetuning | TRL padding_free=True | TRL padded | vs padding-free | vs padded |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, fmt, ratio in metrics:
        a, b, c = ours[key], pf[key], padded[key]
        # Time-like rows: the ratio is theirs / ours (above 1 = we are faster).
        faster = key in ("total_s", "first_step_s")
        r1 = _ratio(b, a) if faster else _ratio(a, b)
        r2 = _ratio(c, a) if faster else _ratio(a, c)
        lines.append(
            f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {fmt.format(c)} | "
            f"{r1 if ratio else ''} | {r2 if ratio else ''} |"
        )
    lines.append(f"| attention kernel | {ours['attention']} | transformers sdpa (block mask) | "
                 "transformers sdpa (padding mask) | | |")  # fmt: skip
    return lines


def dpo_table(ours: dict, trl: dict) -> list[str]:
    rows = [
        ("trained (non-padding) tokens/s", f"{ours['tokens_per_s']:,.0f}", f"{trl['tokens_per_s']:,.0f}",
         _ratio(ours["tokens_per_s"], trl["tokens_per_s"])),
        ("end to end (s)", f"{ours['total_s']:.1f}", f"{trl['total_s']:.1f}", _ratio(trl["total_s"], ours["total_s"])),
        ("time to first optimizer step (s)", f"{ours['first_step_s']:.1f}", f"{trl['first_step_s']:.1f}",
         _ratio(trl["first_step_s"], ours["first_step_s"])),
        ("peak RSS (MB)", f"{ours['peak_rss_mb']:,.0f}", f"{trl['peak_rss_mb']:,.0f}",
         _ratio(ours["peak_rss_mb"], trl["peak_rss_mb"])),
        ("padding share of computed tokens", f"{ours['padding_share']:.1%}", f"{trl['padding_share']:.1%}", ""),
        ("useful FLOP/s / measured matmul peak", f"{ours['flops_fraction']:.1%}", f"{trl['flops_fraction']:.1%}", ""),
        ("attention kernel", ours["attention"], "transformers sdpa (padding mask)", ""),
    ]  # fmt: skip
    return [
        "| metric | finetuning (packed DPO) | TRL DPOTrainer (padded) | ratio |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
    ]


def scaling_table(rows: list[tuple[int, int, dict]], baseline_rss: float) -> list[str]:
    lines = [
        "| micro-batch | tokens per micro-batch | trained tokens/s | peak RSS (MB) | RSS above the "
        "model-only baseline, per 1k tokens (MB) |",
        "|---|---|---|---|---|",
    ]
    for batch, length, result in rows:
        tokens = batch * length
        extra = (result["peak_rss_mb"] - baseline_rss) / (tokens / 1000)
        lines.append(
            f"| {batch} x {length} | {tokens:,} | {result['tokens_per_s']:,.0f} | "
            f"{result['peak_rss_mb']:,.0f} | {extra:,.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=480)
    parser.add_argument("--median", type=int, default=69, help="median example length (tokens)")
    parser.add_argument("--sigma", type=float, default=0.81, help="log-normal spread (p95 ~3.8x)")
    parser.add_argument("--cap", type=int, default=779, help="longest example (tokens)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each system, interleaved")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--skip", default="", help="comma list of: sft, dpo, scaling")
    parser.add_argument(
        "--scaling", default="8x512,8x2048,16x2048", help="micro-batches (examples x tokens)"
    )
    parser.add_argument("--scaling-steps", type=int, default=3)
    parser.add_argument(
        "--scaling-size", choices=sorted(SIZES), default=None, help="default: --size"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown here")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads for every system (and the matmul peak); default: torch's",
    )  # fmt: skip
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                "--device cuda: no CUDA GPU is visible to torch here (torch.cuda.is_available() is "
                "False); run on a GPU machine, or without --device for the CPU benchmark"
            )

    from finetuning.testing import build_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        hidden, layers, heads, intermediate = SIZES[args.size]
        model_dir = build_model(
            workdir / "model", "llama", hidden_size=hidden, num_layers=layers, num_heads=heads,
            intermediate_size=intermediate,
        )  # fmt: skip
        from transformers import AutoConfig

        model = {"params": _count_params(AutoConfig.from_pretrained(model_dir)), "layers": layers,
                 "hidden": hidden}  # fmt: skip
        lengths = synthetic_lengths(args.rows, 0, args.median, args.sigma, args.cap)
        data = workdir / "chats.jsonl"
        write_data(data, lengths, seed=0)
        write_preferences(workdir / "pref.jsonl", workdir / "pref-trl.jsonl", lengths, seed=1)
        spec = {
            "model": str(model_dir), "data": str(data), "device": args.device, "steps": args.steps,
            "batch": args.batch, "lr": 1e-4, "max_length": 2048, "attn": args.attn,
            "cache": str(workdir / "cache"), "dpo_data": str(workdir / "pref.jsonl"),
            "trl_dpo_data": str(workdir / "pref-trl.jsonl"), "threads": args.threads,
        }  # fmt: skip
        peak = matmul_peak(args.device)
        pre_cold, pre_cached = preprocessing(spec)
        ordered = sorted(lengths)
        out = [
            f"Command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`",
            "",
            f"Model: Llama-style, {model['params'] / 1e6:.1f}M parameters ({layers} layers, hidden "
            f"{hidden}), {args.device} ({platform.machine()}, {os.cpu_count()} cores); data: "
            f"{args.rows} chats, log-normal lengths (median {ordered[len(ordered) // 2]}, p95 "
            f"{ordered[int(len(ordered) * 0.95)]}, max {ordered[-1]} tokens); {args.steps} "
            f"optimizer steps of {args.batch} examples, first {args.warmup} excluded from "
            f"throughput; each system run {args.repeats}x, interleaved, best run shown; matmul "
            "peak PEAK GFLOP/s measured in the same run (best 2048^2 multiply, measured before "
            f"and after every repeat; {torch_threads(args.threads)} intra-op threads for every "
            "system and the peak).",
            "",
        ]
        raws: dict[str, list[dict]] = {}
        systems = [
            *(SFT_SYSTEMS if "sft" not in skip else ()),
            *(("ours_dpo", "trl_dpo") if "dpo" not in skip else ()),
        ]
        for repeat in range(args.repeats):
            # Interleaved, and in reverse order on every second repeat, so slow phases of the
            # machine's other load fall on different systems.
            for system in systems if repeat % 2 == 0 else systems[::-1]:
                raw = run_child(system, spec, workdir, tag=f"-{repeat}")
                raws.setdefault(system, []).append(raw)
                print(f"{system} run {repeat}: {summarize(raw, args.warmup, model, peak)['tokens_per_s']:,.0f} tokens/s",
                      file=sys.stderr)  # fmt: skip
            peak = max(peak, matmul_peak(args.device))  # the best seen over the whole run
        repeats = {
            system: [
                summarize(r, args.warmup, model, peak, dpo=system.endswith("dpo")) for r in runs
            ]
            for system, runs in raws.items()
        }
        results = {k: best_of(v) for k, v in repeats.items()}
        spread = {
            k: (min(r["tokens_per_s"] for r in v), max(r["tokens_per_s"] for r in v))
            for k, v in repeats.items()
        }
        if "sft" not in skip:
            out += ["### SFT", "", *sft_table(results), ""]
            out.append(
                f"Preprocessing (ours, {args.rows} chats): {pre_cold:,.0f} rows/s cold, "
                f"{pre_cached:,.0f} rows/s cached. Attention share of the useful FLOPs (ours): "
                f"{results['ours']['attention_share']:.1%}."
            )
            out.append("")
        if "dpo" not in skip:
            out += ["### DPO", "", *dpo_table(results["ours_dpo"], results["trl_dpo"]), ""]
        pairs = [("ours", "trl_pf"), ("ours", "trl"), ("ours_dpo", "trl_dpo")]
        within = [
            f"{a}/{b} "
            + ", ".join(
                f"{x['tokens_per_s'] / y['tokens_per_s']:.2f}x"
                for x, y in zip(repeats[a], repeats[b], strict=True)
            )
            for a, b in pairs
            if a in repeats and b in repeats
        ]
        out.append(
            "Tokens/s ratios within each repeat (systems of one repeat ran back to back): "
            + "; ".join(within)
            + "."
        )
        out.append(
            "Spread of tokens/s over the repeats (min-max): "
            + "; ".join(f"{k} {a:,.0f}-{b:,.0f}" for k, (a, b) in spread.items())
            + "."
        )
        out.append("")
        if "scaling" not in skip:
            rows = []
            scaling_size = args.scaling_size or args.size
            if scaling_size != args.size:
                hidden, layers, heads, intermediate = SIZES[scaling_size]
                spec["model"] = str(
                    build_model(
                        workdir / "scaling-model", "llama", hidden_size=hidden, num_layers=layers,
                        num_heads=heads, intermediate_size=intermediate,
                    )
                )  # fmt: skip
                model = {"params": _count_params(AutoConfig.from_pretrained(spec["model"])),
                         "layers": layers, "hidden": hidden}  # fmt: skip
            for item in args.scaling.split(","):
                batch, length = (int(x) for x in item.lower().split("x"))
                fixed = workdir / f"fixed-{length}.jsonl"
                write_data(fixed, [length] * batch * (args.scaling_steps + 1), seed=2)
                scaled = {**spec, "data": str(fixed), "batch": batch, "steps": args.scaling_steps,
                          "max_length": max(2048, length + 16)}  # fmt: skip
                raw = run_child("ours", scaled, workdir, tag=f"-scale-{batch}x{length}")
                rows.append((batch, length, summarize(raw, 1, model, peak)))
                print(
                    f"scaling {batch}x{length}: {rows[-1][2]['peak_rss_mb']:,.0f} MB",
                    file=sys.stderr,
                )
            baseline = _model_only_rss(spec)
            out += [
                f"### Scaling (finetuning, fixed-length examples, {model['params'] / 1e6:.1f}M "
                f"parameters, {args.scaling_steps} steps, the first excluded)",
                "",
                *scaling_table(rows, baseline),
                "",
                f"Model-only baseline RSS (the model loaded and one 16-token step): {baseline:,.0f} MB.",
                "",
            ]
        text = "\n".join(out).replace("PEAK", f"{peak / 1e9:,.0f}", 1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")


def _model_only_rss(spec: dict) -> float:
    """Peak RSS of a child that trains a few 16-token micro-batches (what every run pays)."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        tiny = workdir / "tiny.jsonl"
        write_data(tiny, [16] * 8, seed=3)
        raw = run_child("ours", {**spec, "data": str(tiny), "batch": 2, "steps": 2}, workdir)
    return raw["peak_rss_mb"]


def torch_threads(requested: int | None) -> int:
    import torch

    return requested or torch.get_num_threads()


def _count_params(config) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    main()
