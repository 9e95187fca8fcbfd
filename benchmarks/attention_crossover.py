"""When is one masked sdpa call over several packed examples cheaper than one call per example?

Usage:
    python benchmarks/attention_crossover.py [--heads 4] [--dim 64] [--repeats 7]

For rows of ``n`` equal examples of ``length`` tokens it times the forward and backward pass of
(a) one causal sdpa call per example on ``torch.split`` views, and (b) one sdpa call over the
whole row with a block-diagonal causal mask, and prints the best of ``repeats`` in ms. The
per-example attention of ``finetuning.model.attention`` packs consecutive examples into one
masked call while the segment stays within its token budget (``SEGMENT_TOKENS``); this table is
where that budget comes from.
"""

from __future__ import annotations

import argparse
import time


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, heads {args.heads}, "
          f"head dim {args.dim}; ms for forward + backward, best of {args.repeats}")  # fmt: skip
    print("| examples x length | row tokens | per-example calls | one masked call | ratio |")
    print("|---|---|---|---|---|")
    for n, length in [(2, 32), (8, 16), (8, 64), (4, 128), (8, 128), (4, 256), (8, 256),
                      (2, 512), (4, 512), (2, 1024)]:  # fmt: skip
        total = n * length
        shape = (1, args.heads, total, args.dim)
        q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
        example = torch.arange(total) // length
        pos = torch.arange(total)
        mask = (example[:, None] == example[None, :]) & (pos[None, :] <= pos[:, None])

        def split_calls(q=q, k=k, v=v, length=length):
            pieces = [
                F.scaled_dot_product_attention(a, b, c, is_causal=True)
                for a, b, c in zip(
                    q.split(length, 2), k.split(length, 2), v.split(length, 2), strict=True
                )
            ]
            torch.cat(pieces, 2).sum().backward()

        def masked_call(q=q, k=k, v=v, mask=mask):
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()

        a, b = _time(split_calls, args.repeats), _time(masked_call, args.repeats)
        print(f"| {n} x {length} | {total} | {a:.2f} | {b:.2f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
