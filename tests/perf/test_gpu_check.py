"""benchmarks/gpu_check.py, the prepared GPU check, in its CPU smoke mode (so it cannot rot).

The GPU run itself needs a lent machine (README, "GPU check"); here the same code runs on the
test suite's tiny model: the equivalence checks compare real packed and padded gradients, and the
throughput checks train our engine and TRL in their own processes, as on the GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = [
    "varlen_equivalence",
    "flash_attention",
    "qlora_step",
    "resume",
    "sft_throughput",
    "dpo_throughput",
]


def _smoke(tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out), *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert {"device", "torch", "transformers", "checks"} <= set(report)
    assert [c["name"] for c in report["checks"]] == CHECKS
    for check in report["checks"]:
        assert check["status"] in ("pass", "skip"), check
        assert check["why"] and isinstance(check["figures"], dict)
    return {c["name"]: c for c in report["checks"]}


def test_the_smoke_checks_packed_gradients_and_sft_throughput(tmp_path):
    """The fast tier's part of the smoke: the in-process checks and one engine-vs-TRL comparison.

    The full smoke (resume and DPO: four more processes) is the test below, in the full suite.
    """
    checks = _smoke(
        tmp_path, "--only", "varlen_equivalence,flash_attention,qlora_step,sft_throughput"
    )
    varlen = checks["varlen_equivalence"]
    assert varlen["status"] == "pass"
    assert set(varlen["figures"]) >= {"llama_bf16", "llama_fp32", "mistral_bf16", "mistral_fp32"}
    for key in ("llama_fp32", "mistral_fp32"):
        figures = varlen["figures"][key]
        assert figures["kernel"] == "per-example sdpa"  # the CPU fallback of varlen_attn ran
        assert figures["grad_rel_err"] < 1e-4
    assert checks["flash_attention"]["status"] == "skip"
    assert "CUDA" in checks["flash_attention"]["why"]
    assert checks["qlora_step"]["status"] == "skip"
    sft = checks["sft_throughput"]
    assert sft["status"] == "pass"
    ours, trl = sft["figures"]["ours"], sft["figures"]["trl_pf"]
    assert ours["attention"] == "per-example sdpa"
    assert ours["tokens_per_s"] > 0 and trl["tokens_per_s"] > 0 and 0 < ours["mfu"] < 1
    assert sft["figures"]["tokens_per_s_ratio"] == pytest.approx(
        ours["tokens_per_s"] / trl["tokens_per_s"]
    )
    assert checks["resume"] == {
        "name": "resume", "status": "skip", "why": "not selected (--only)", "figures": {}
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.full
def test_the_whole_smoke_passes_on_the_cpu(tmp_path):
    checks = _smoke(tmp_path)
    resume = checks["resume"]
    assert resume["status"] == "pass", resume
    assert resume["figures"]["first_exit"] == 75 and resume["figures"]["second_exit"] == 0
    assert resume["figures"]["final_step"] == resume["figures"]["max_steps"]
    dpo = checks["dpo_throughput"]
    assert dpo["status"] == "pass", dpo
    assert dpo["figures"]["ours_dpo"]["padding_share"] == 0
    assert dpo["figures"]["mfu_formula"].startswith("8 * N")


def test_every_wheel_the_gpu_machine_gets_is_pinned_in_the_constraints():
    """benchmarks/gpu_wheels.sh downloads each package at its constraints.txt pin; one it names
    that the constraints lost would stop it (and the GPU machine would get no wheels)."""
    import re

    script = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    names = re.search(r"^packages=\((.*?)^\)", script, re.S | re.M).group(1).split()
    assert {"trl", "datasets", "pydantic", "pydantic_core", "transformers", "bitsandbytes"} <= set(
        names
    )

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {
        norm(line.split("==")[0]) for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }  # fmt: skip
    assert {norm(n) for n in names} <= pins
