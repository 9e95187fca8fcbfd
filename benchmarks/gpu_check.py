"""The prepared GPU check (issue 28): the CUDA path's correctness and speed, in one command.

Usage:
    python benchmarks/gpu_check.py [--out gpu_check.json] [--budget 300]   # one CUDA GPU
    python benchmarks/gpu_check.py --smoke [--out gpu_check.json]           # CPU, tiny, < 1 min

Writes ``{"device", "torch", "transformers", "packages", "checks": [{"name", "status", "why",
"figures"}]}`` (status ``pass`` / ``fail`` / ``skip``), rewritten after every check so that a run
stopped at its time limit still leaves what it measured. The checks, cheapest first:

- ``varlen_equivalence``: a packed batch of mixed lengths through the engine's attention choice
  (``varlen_attn`` on CUDA in bf16, per-example sdpa in fp32 or on the CPU) gives the padded
  batch's loss and gradients, Llama and Mistral (sliding window), bf16 and fp32; the kernel that
  ran is named. The tolerance is the larger of a fixed one and twice the padded batch's own
  distance from the fp32 reference (the dtype's noise).
- ``flash_attention``: the same with ``flash_attention_2``, when flash-attn is installed.
- ``qlora_step``: a few 4-bit (bitsandbytes nf4) LoRA steps through ``finetuning sft``.
- ``resume``: ``finetuning sft`` is sent SIGTERM mid-run (exit 75, a checkpoint), relaunched, and
  ends at the configured step, having resumed from that checkpoint.
- ``sft_throughput``: our SFT vs TRL ``SFTTrainer(padding_free=True)``, same ~0.76B-parameter
  random Llama, data and batch, bf16, examples up to 2048 tokens packed into one row; tokens/s,
  MFU = 6 * N * tokens/s / the bf16 matmul peak measured here, peak GPU memory.
- ``dpo_throughput``: packed DPO vs TRL ``DPOTrainer`` the same way, on a ~0.2B model
  (MFU with 8 * N: the reference model's forward).

The throughput runs reuse ``benchmarks/run.py`` (data, peak, summary) and ``trainer_child.py``
(one process per system). ``--smoke`` runs the same code on the CPU with the test suite's tiny
model and a few steps; what needs CUDA says ``skip`` with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import (  # noqa: E402  (benchmarks/ is not a package)
    SIZES,
    _count_params,
    matmul_peak,
    run_child,
    summarize,
    synthetic_lengths,
    write_data,
    write_preferences,
)

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
            "huggingface_hub", "pydantic", "bitsandbytes", "flash_attn", "pyarrow")  # fmt: skip
EXIT_PREEMPTED = 75  # finetuning.train.safety.guards.EXIT_PREEMPTED (read without importing it)


@dataclass(frozen=True)
class Throughput:
    """One throughput comparison: model size, data and steps."""

    size: tuple[int, int, int, int]  # hidden, layers, heads, intermediate
    rows: int
    steps: int
    warmup: int
    batch: int
    median: int
    cap: int
    max_length: int


@dataclass(frozen=True)
class Profile:
    device: str
    check_size: tuple[int, int, int, int]  # equivalence, QLoRA and resume model
    lengths: tuple[int, ...]  # the examples of the equivalence batch
    window: int  # Mistral's sliding window there
    sft: Throughput
    dpo: Throughput
    resume_steps: int
    save_steps: int
    child_timeout: int = 300


GPU = Profile(
    "cuda", (512, 4, 8, 1408), (1500, 37, 700, 1, 300, 9, 1024), 256,
    sft=Throughput(SIZES["1b"], rows=320, steps=30, warmup=5, batch=8, median=600, cap=1900,
                   max_length=2048),
    dpo=Throughput((1024, 16, 16, 2816), rows=240, steps=20, warmup=4, batch=8, median=250,
                   cap=600, max_length=2048),
    resume_steps=300, save_steps=20, child_timeout=240,
)  # fmt: skip
SMOKE = Profile(
    "cpu", SIZES["test"], (9, 1, 13, 4, 4), 4,
    sft=Throughput(SIZES["test"], rows=12, steps=3, warmup=1, batch=4, median=24, cap=60,
                   max_length=128),
    dpo=Throughput(SIZES["test"], rows=8, steps=2, warmup=1, batch=2, median=20, cap=40,
                   max_length=128),
    resume_steps=12, save_steps=3, child_timeout=120,
)  # fmt: skip


@dataclass
class Report:
    """The JSON being written; :meth:`add` appends one check and rewrites the file."""

    path: Path
    data: dict = field(default_factory=dict)

    def add(self, name: str, status: str, why: str, figures: dict) -> None:
        self.data["checks"].append({"name": name, "status": status, "why": why, "figures": figures})
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[gpu_check] {name}: {status} - {why}", file=sys.stderr, flush=True)


def environment() -> dict:
    import torch
    import transformers

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores), no CUDA GPU"
    packages = {}
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            packages[name] = importlib.metadata.version(name.replace("_", "-"))
    return {"device": device, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "packages": packages, "checks": []}  # fmt: skip


def build(workdir: Path, size: tuple[int, int, int, int], arch: str = "llama") -> Path:
    """A random model of ``size`` (built once per run: the checks share models of one size)."""
    from finetuning.testing import build_model

    hidden, layers, heads, intermediate = size
    path = workdir / f"{arch}-{hidden}x{layers}"
    if path.is_dir():
        return path
    return build_model(path, arch, hidden_size=hidden, num_layers=layers, num_heads=heads,
                       intermediate_size=intermediate)  # fmt: skip


# ---- equivalence: packed batch through our attention == padded batch ----------------------------


def _examples(lengths: tuple[int, ...], vocab: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(7)
    out = []
    for n in lengths:
        ids = rng.integers(3, vocab, n)
        labels = ids.copy()
        labels[: n // 3] = -100  # an untrained prompt
        out.append({"input_ids": ids, "labels": labels})
    return out


def _loss_and_grads(model, batch: dict, device: str):
    """The engine's chunked loss on the kept logits, and all gradients as one fp32 vector."""
    import torch

    from finetuning.train.loss import chunked_causal_lm_loss

    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    labels = batch.pop("labels")
    model.zero_grad(set_to_none=True)
    loss = chunked_causal_lm_loss(model(**batch, use_cache=False), labels)
    loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), grads


def _load(path: Path, attn: str, dtype, device: str, window: int | None):
    from transformers import AutoModelForCausalLM

    extra = {"sliding_window": window} if window else {}
    model = AutoModelForCausalLM.from_pretrained(
        path, attn_implementation=attn, dtype=dtype, **extra
    )
    return model.to(device).train()


def equivalence(
    profile: Profile,
    workdir: Path,
    packed_attn: str | None = None,
    dtypes: tuple[str, ...] = ("bf16", "fp32"),
) -> tuple[str, str, dict]:
    """Packed vs padded loss and gradients; ``packed_attn`` None = the engine's own choice.

    The reference is the padded batch in fp32 with sdpa. Each dtype's model computes the padded
    batch (its distance from the reference is the dtype's noise) and then the packed one.
    """
    import torch
    from transformers import AutoConfig

    from finetuning.data.collate import PaddedCollator, PaddingFreeCollator
    from finetuning.model import attention

    device = profile.device
    figures, failures = {}, []
    for arch, window in (("llama", None), ("mistral", profile.window)):
        path = build(workdir, profile.check_size, arch)
        examples = _examples(profile.lengths, AutoConfig.from_pretrained(path).vocab_size)
        padded = PaddedCollator(pad_id=0, keep_trained_logits=True)(examples)
        packed = PaddingFreeCollator(keep_trained_logits=True)(examples)
        reference = _load(path, "sdpa", torch.float32, device, window)
        ref_loss, ref_grads = _loss_and_grads(reference, padded, device)
        for name in dtypes:
            dtype, fixed = {"bf16": (torch.bfloat16, 2e-2), "fp32": (torch.float32, 1e-4)}[name]
            if name == "fp32" and packed_attn is None:
                model, noise_loss, noise_grads = reference, ref_loss, ref_grads
            else:
                model = _load(path, packed_attn or "sdpa", dtype, device, window)
                noise_loss, noise_grads = _loss_and_grads(model, padded, device)
            if packed_attn is None:
                attention.choose(model, "sdpa")  # what the SFT recipe does
            attention.reset_kernels_ran()
            loss, grads = _loss_and_grads(model, packed, device)
            kernels = attention.kernels_ran() or [packed_attn or "sdpa"]
            err = float((grads - ref_grads).norm() / ref_grads.norm())
            noise = float((noise_grads - ref_grads).norm() / ref_grads.norm())
            tol = max(fixed, 2 * noise)
            loss_tol = max(fixed, 2 * abs(noise_loss - ref_loss))
            key = f"{arch}_{name}"
            figures[key] = {"kernel": ", ".join(kernels), "loss": loss, "padded_loss": noise_loss,
                            "fp32_padded_loss": ref_loss, "grad_rel_err": err,
                            "padded_grad_rel_err": noise, "tolerance": tol}  # fmt: skip
            if not (math.isfinite(loss) and abs(loss - ref_loss) <= loss_tol and err <= tol):
                failures.append(
                    f"{key}: loss {loss:.5f} vs {ref_loss:.5f}, grad err {err:.2e} (tolerance {tol:.2e})"
                )
            varlen_due = packed_attn is None and device == "cuda" and name == "bf16"
            if varlen_due and "varlen_attn (CUDA)" not in kernels:
                failures.append(f"{key}: varlen_attn did not run (ran: {kernels})")
            del model
        del reference
        _free()
    kernels = sorted({f["kernel"] for f in figures.values()})
    if failures:
        return "fail", "; ".join(failures), figures
    where = "" if device == "cuda" else " (CPU: varlen_attn needs a CUDA GPU)"
    return (
        "pass",
        f"packed = padded loss and gradients, kernels: {', '.join(kernels)}{where}",
        figures,
    )


def flash_check(profile: Profile, workdir: Path) -> tuple[str, str, dict]:
    if profile.device != "cuda":
        return "skip", "flash-attention needs a CUDA GPU", {}
    if importlib.util.find_spec("flash_attn") is None:
        return "skip", ("flash-attn is not installed (its wheels are built per torch/CUDA pair and "
                        "are hundreds of MB: not carried)"), {}  # fmt: skip
    return equivalence(profile, workdir, "flash_attention_2", ("bf16",))  # flash has no fp32


# ---- runs through the CLI: QLoRA and resume --------------------------------------------------


def _cli_config(profile: Profile, model: Path, data: Path, out: Path, **training_args) -> dict:
    return {
        "data_conf": {"training_data": {"type": "CONCATENATION", "datasets": [{"path": str(data)}]},
                      "chat_template_name": "keep-original"},
        "training_args": {"learning_rate": 1e-4, "logging_steps": 1, "output_dir": str(out),
                          "report_to": ["none"], "seed": 0, "dataloader_num_workers": 0,
                          "use_cpu": profile.device == "cpu", "bf16": profile.device == "cuda",
                          **training_args},
        "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(model)},
        "sft_args": {"max_seq_length": 256},
    }  # fmt: skip


def _launch(config: dict, path: Path, log: Path) -> subprocess.Popen:
    import yaml

    path.write_text(yaml.safe_dump(config))
    with log.open("a") as sink:
        return subprocess.Popen([sys.executable, "-m", "finetuning", "sft", str(path)],
                                stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip


def _wait(proc: subprocess.Popen, timeout: int, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"timed out after {timeout} s:\n{log.read_text()[-2000:]}") from None


def _chats(workdir: Path, rows: int) -> Path:
    path = workdir / f"chats-{rows}.jsonl"
    if not path.exists():
        write_data(path, synthetic_lengths(rows, 3, 40, 0.5, 120), seed=3)
    return path


def qlora_check(profile: Profile, workdir: Path) -> tuple[str, str, dict]:
    if profile.device != "cuda":
        return "skip", "the check's QLoRA step runs on CUDA (the CPU path is in the test suite)", {}
    if importlib.util.find_spec("bitsandbytes") is None:
        return "skip", "bitsandbytes is not installed (benchmarks/gpu_wheels.sh carries it)", {}
    out, log = workdir / "qlora-out", workdir / "qlora.log"
    config = _cli_config(profile, build(workdir, profile.check_size), _chats(workdir, 32),
                         out, max_steps=4, save_strategy="no", learning_rate=1e-3)  # fmt: skip
    config["peft_conf"] = {"peft_type": "LORA", "peft_kwargs": {"r": 8, "lora_alpha": 16,
                           "target_modules": "all-linear"}}  # fmt: skip
    config["quant_conf"] = {"quantization_type": "bits-and-bytes", "load_in_4bit": True,
                            "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"}  # fmt: skip
    code = _wait(_launch(config, workdir / "qlora.yaml", log), profile.child_timeout, log)
    text = log.read_text()
    quantized = [
        line.split("quantized: ", 1)[1] for line in text.splitlines() if "quantized: " in line
    ]
    if code != 0:
        return "fail", f"finetuning sft exited {code}:\n{text[-2000:]}", {}
    summary = json.loads((out / "run_summary.json").read_text())
    figures = {"steps": summary["steps"], "train_loss": summary["train_loss"],
               "tokens_per_s": summary["tokens_per_second"], "quantized_layers": quantized}  # fmt: skip
    if (
        not quantized
        or "4bit" not in quantized[0]
        or not math.isfinite(summary["train_loss"] or math.nan)
    ):
        return "fail", f"no 4-bit layers or no finite loss: {quantized}", figures
    return "pass", f"4 QLoRA steps, {quantized[0]}", figures


def resume_check(profile: Profile, workdir: Path) -> tuple[str, str, dict]:
    out, log = workdir / "resume-out", workdir / "resume.log"
    steps, every = profile.resume_steps, profile.save_steps
    config = _cli_config(profile, build(workdir, profile.check_size), _chats(workdir, 32),
                         out, max_steps=steps, save_strategy="steps", save_steps=every)  # fmt: skip
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    first = _launch(config, workdir / "resume.yaml", log)
    started = time.monotonic()
    while not (out / f"checkpoint-{every}" / "trainer_state.json").exists():
        if first.poll() is not None or time.monotonic() - started > profile.child_timeout:
            first.kill()
            return "fail", f"no checkpoint-{every} appeared:\n{log.read_text()[-2000:]}", {}
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    code = _wait(first, profile.child_timeout, log)
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-[0-9]*"))
    figures = {"max_steps": steps, "first_exit": code, "checkpoints_after_sigterm": saved}
    if code != EXIT_PREEMPTED or not saved or saved[-1] >= steps:
        return "fail", f"SIGTERM: exit {code} (want {EXIT_PREEMPTED}), checkpoints {saved}", figures
    mark = len(log.read_text())
    code = _wait(_launch(config, workdir / "resume.yaml", log), profile.child_timeout, log)
    second = log.read_text()[mark:]
    figures["second_exit"] = code
    if code != 0:
        return "fail", f"the resumed run exited {code}:\n{second[-2000:]}", figures
    summary = json.loads((out / "run_summary.json").read_text())
    figures.update(final_step=summary["steps"], train_loss=summary["train_loss"])
    resumed = any("resuming from" in line and line.rstrip().endswith(f"checkpoint-{saved[-1]}")
                  for line in second.splitlines())  # fmt: skip
    if summary["steps"] != steps or not resumed:
        return (
            "fail",
            f"ended at step {summary['steps']} of {steps}; resumed from checkpoint-{saved[-1]}: {resumed}",
            figures,
        )
    return (
        "pass",
        f"SIGTERM at checkpoint-{saved[-1]} (exit 75), resumed there, ended at step {steps}",
        figures,
    )


# ---- throughput: our engine vs TRL, one process per system (trainer_child.py) -----------------


def throughput(profile: Profile, workdir: Path, peak: float, dpo: bool) -> tuple[str, str, dict]:
    plan = profile.dpo if dpo else profile.sft
    tag = "dpo" if dpo else "sft"
    model_dir = build(workdir, plan.size)
    from transformers import AutoConfig

    hidden, layers = plan.size[0], plan.size[1]
    model = {
        "params": _count_params(AutoConfig.from_pretrained(model_dir)),
        "layers": layers,
        "hidden": hidden,
    }
    lengths = synthetic_lengths(plan.rows, 0, plan.median, 0.8, plan.cap)
    data = workdir / f"{tag}-chats.jsonl"
    write_data(data, lengths, seed=0)
    write_preferences(
        workdir / f"{tag}-pref.jsonl", workdir / f"{tag}-pref-trl.jsonl", lengths, seed=1
    )
    spec = {"model": str(model_dir), "data": str(data), "device": profile.device, "steps": plan.steps,
            "batch": plan.batch, "lr": 1e-5, "max_length": plan.max_length, "attn": "sdpa",
            "cache": str(workdir / "cache"), "dpo_data": str(workdir / f"{tag}-pref.jsonl"),
            "trl_dpo_data": str(workdir / f"{tag}-pref-trl.jsonl"),
            "threads": 1 if profile.device == "cpu" else None}  # fmt: skip
    systems = ("ours_dpo", "trl_dpo") if dpo else ("ours", "trl_pf")
    names = {"ours": "finetuning", "trl_pf": "TRL SFTTrainer padding_free=True",
             "ours_dpo": "finetuning packed DPO", "trl_dpo": "TRL DPOTrainer"}  # fmt: skip
    dense = 8 if dpo else 6
    figures = {"params": model["params"], "steps": plan.steps, "warmup_steps": plan.warmup,
               "examples_per_step": plan.batch, "max_length": plan.max_length,
               "peak_tflops_measured": peak / 1e12, "mfu_formula": f"{dense} * N * tokens/s / peak"}  # fmt: skip
    errors = []
    for system in systems:
        try:
            raw = run_child(system, spec, workdir, tag=f"-{tag}")
        except SystemExit as exc:  # run_child's way of reporting a failed child
            errors.append(f"{names[system]}: {str(exc)[-1500:]}")
            continue
        result = summarize(raw, plan.warmup, model, peak, dpo=dpo)
        figures[system] = {
            "system": names[system], "tokens_per_s": result["tokens_per_s"],
            "mfu": dense * model["params"] * result["tokens_per_s"] / peak,
            "useful_flops_fraction": result["flops_fraction"], "padding_share": result["padding_share"],
            "peak_gpu_mb": result["peak_gpu_mb"], "end_to_end_s": result["total_s"],
            "attention": result["attention"],
            "tokens_per_step": sum(raw["real"][plan.warmup:]) / max(1, len(raw["real"]) - plan.warmup),
        }  # fmt: skip
    ours, theirs = (figures.get(s) for s in systems)
    if ours and theirs:
        figures["tokens_per_s_ratio"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
    if errors:
        return "fail", "; ".join(errors), figures
    why = (f"{figures['tokens_per_s_ratio']:.2f}x {names[systems[1]]}'s tokens/s, MFU {ours['mfu']:.1%} "
           f"vs {theirs['mfu']:.1%}, attention: {ours['attention']}")  # fmt: skip
    if profile.device == "cuda" and "varlen_attn (CUDA)" not in ours["attention"]:
        return "fail", f"varlen_attn did not run: {why}", figures
    return (
        "pass",
        why + ("" if profile.device == "cuda" else " (CPU smoke: not GPU figures)"),
        figures,
    )


def _cpu_peak() -> float:
    """The smoke's matmul peak: a 512^3 fp32 multiply, best of 5 (run.py's 2048^3 takes seconds)."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - began)
    return 2 * 512**3 / best


def _free() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, a few steps")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget", type=float, default=300,
                        help="seconds after which no further check starts (default 300)")  # fmt: skip
    parser.add_argument("--only", default="", help="comma list of check names (default: all)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.smoke:
        # One intra-op thread here and in every child: on a small shared CPU two threads mostly
        # wait for each other (docs/performance.md), and the smoke must stay short.
        os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    if args.smoke:
        torch.set_num_threads(1)

    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA GPU is visible to torch here; use --smoke on the CPU")
    profile = SMOKE if args.smoke else GPU
    report = Report(args.out, environment())
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("FINETUNING_CACHE_DIR", str(workdir / "cache"))
        peak = matmul_peak("cuda") if profile.device == "cuda" else _cpu_peak()
        report.data["matmul_peak_tflops"] = peak / 1e12
        checks = {
            "varlen_equivalence": lambda: equivalence(profile, workdir, None),
            "flash_attention": lambda: flash_check(profile, workdir),
            "qlora_step": lambda: qlora_check(profile, workdir),
            "resume": lambda: resume_check(profile, workdir),
            "sft_throughput": lambda: throughput(profile, workdir, peak, dpo=False),
            "dpo_throughput": lambda: throughput(profile, workdir, peak, dpo=True),
        }
        only = set(filter(None, args.only.split(","))) or set(checks)
        for name, check in checks.items():
            if name not in only:
                report.add(name, "skip", "not selected (--only)", {})
                continue
            if time.monotonic() - started > args.budget:
                report.add(name, "skip", f"the time budget ({args.budget:.0f} s) ran out first", {})
                continue
            began = time.monotonic()
            try:
                status, why, figures = check()
            except Exception as exc:
                status, why = "fail", f"{type(exc).__name__}: {str(exc)[-1500:]}"
                figures = {"traceback": traceback.format_exc()[-2500:]}
            figures["seconds"] = round(time.monotonic() - began, 1)
            report.add(name, status, why, figures)
            _free()
    report.data["seconds"] = round(time.monotonic() - started, 1)
    report.path.write_text(json.dumps(report.data, indent=2) + "\n")
    return 1 if any(c["status"] == "fail" for c in report.data["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
