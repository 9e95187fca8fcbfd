"""The same tiny SFT config on 1 process and on 2 processes (torchrun, gloo on CPU)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.distributed.conftest import distributed_config, process_env
from tests.helpers import losses, write_config

pytestmark = [pytest.mark.slow, pytest.mark.full]  # multi-process: the full suite only


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "-m", "finetuning"],
    # On CPU, `accelerate launch --cpu --num_processes 2` runs ONE process; this form runs two.
    "accelerate": ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--no-python", "finetuning"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_one_and_two_processes_train_the_same_run(
    launcher, single_process_run, tmp_path, tiny_llama, chat_data_small
):
    import shutil

    if launcher == "accelerate" and shutil.which("accelerate") is None:
        pytest.skip("the accelerate command is not on PATH")
    two = tmp_path / "two"
    config = write_config(
        tmp_path / "two.yaml", distributed_config(tiny_llama, chat_data_small, two)
    )
    double = subprocess.run(
        [*LAUNCHERS[launcher], "sft", str(config)],
        capture_output=True, text=True, env=process_env(tmp_path), timeout=600,
    )  # fmt: skip
    log = double.stdout + double.stderr
    assert double.returncode == 0, log[-4000:]
    # The batch formula keeps the total: half the accumulation per process.
    assert "batch: total 8 = 2 processes x 4 per device x 1 accumulation" in log
    # Data prepared once: rank 0 encodes, rank 1 loads the cache rank 0 wrote.
    assert re.search(r"\[rank 0\].*data: \d+ rows encoded", log)
    assert re.search(r"\[rank 1\].*data: \d+ rows loaded from the cache", log)
    # Only one process wrote the shared files.
    for name in ("resolved_config.yaml", "data_preflight.txt"):
        writers = re.findall(rf"\[rank (\d)\].*wrote \S*{name}", log)
        assert writers == ["0"], (name, writers)
    assert sorted(p.name for p in two.glob("checkpoint-*")) == [
        "checkpoint-4",
        "checkpoint-8",
        "checkpoint-final",
    ]
    # Same samples per optimizer step, so the loss curves match.
    assert len(losses(single_process_run)) == len(losses(two)) == 8
    assert losses(two) == pytest.approx(losses(single_process_run), rel=2e-3)
