"""Forward + backward of one packed micro-batch, per attention/loss variant, in one process.

Usage:
    python benchmarks/step_ops.py [--size 3m] [--batches 6] [--repeats 5] [--threads 1]

Less noisy than whole training runs on a shared machine: the variants run in one process on the
same micro-batches (the benchmark's data, 8 examples each), interleaved, best of ``repeats``.
For each it prints the time of forward + loss + backward per micro-batch and the number of
operators the profiler records (on an oversubscribed CPU every operator costs a scheduling
delay, so the count matters as much as the FLOPs). Variants:

- ``sdpa block mask``: transformers' sdpa with only ``position_ids`` (it builds the
  block-diagonal mask), the model's own loss: what TRL's ``padding_free=True`` runs;
- ``per-example``: our attention (``finetuning_per_example``) and chunked loss, full logits;
- ``per-example, trained logits``: the same with ``logits_to_keep`` (the LM head and loss only
  on the trained positions), as our SFT runs by default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3m")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompt-share", type=float, default=0.25, help="untrained share")
    parser.add_argument("--median", type=int, default=69, help="median example length")
    parser.add_argument("--cap", type=int, default=779, help="longest example")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import numpy as np
    import torch
    from run import SIZES, synthetic_lengths
    from transformers import AutoModelForCausalLM

    from finetuning.data.collate import PaddingFreeCollator
    from finetuning.model import attention
    from finetuning.testing import build_model
    from finetuning.train.loss import chunked_causal_lm_loss

    if args.threads:
        torch.set_num_threads(args.threads)
    hidden, layers, heads, intermediate = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(
            Path(tmp) / "model", "llama", hidden_size=hidden, num_layers=layers,
            num_heads=heads, intermediate_size=intermediate,
        )  # fmt: skip
        models = {
            name: AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
            for name in ("sdpa", "ours")
        }
    attention.choose(models["ours"], None)
    vocab = models["sdpa"].config.vocab_size
    rng = np.random.default_rng(0)
    lengths = synthetic_lengths(args.batches * args.batch, 0, args.median, 0.81, args.cap)
    examples = []
    for n in lengths:
        ids = rng.integers(3, vocab, n)
        labels = ids.copy()
        labels[: int(n * args.prompt_share)] = -100
        examples.append({"input_ids": ids, "labels": labels})
    chunks = [examples[i : i + args.batch] for i in range(0, len(examples), args.batch)]
    full, kept = PaddingFreeCollator(), PaddingFreeCollator(keep_trained_logits=True)

    def sdpa_step(batch):
        batch = {k: batch[k] for k in ("input_ids", "labels", "position_ids")}
        models["sdpa"](**batch, use_cache=False).loss.backward()

    def ours_step(batch):
        labels = batch.pop("labels")
        outputs = models["ours"](**batch, use_cache=False)
        chunked_causal_lm_loss(outputs, labels).backward()

    variants = {
        "sdpa block mask (TRL padding-free)": (sdpa_step, [full(c) for c in chunks]),
        "per-example, full logits": (ours_step, [full(c) for c in chunks]),
        "per-example, trained logits": (ours_step, [kept(c) for c in chunks]),
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.repeats):
        for name, (step, batches) in variants.items():
            started = time.perf_counter()
            for batch in batches:
                step(dict(batch))
            best[name] = min(best[name], (time.perf_counter() - started) / len(batches))
    counts = {}
    for name, (step, batches) in variants.items():
        with torch.profiler.profile() as prof:
            step(dict(batches[0]))
        counts[name] = sum(e.count for e in prof.key_averages())
    tokens = sum(lengths) / len(chunks)
    print(f"{args.size} model, {torch.get_num_threads()} threads, {len(chunks)} micro-batches "
          f"of {args.batch} examples ({tokens:.0f} tokens each), best of {args.repeats}")  # fmt: skip
    print("| variant | ms per micro-batch (fwd + loss + bwd) | vs sdpa block mask | operators |")
    print("|---|---|---|---|")
    base = best["sdpa block mask (TRL padding-free)"]
    for name in variants:
        print(f"| {name} | {best[name] * 1000:.1f} | {base / best[name]:.2f}x | {counts[name]} |")


if __name__ == "__main__":
    main()
