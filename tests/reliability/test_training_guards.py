"""Preemption, exact resume after SIGKILL, non-finite training, checkpoint limits, safe loading."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from finetuning.train.safety.guards import EXIT_DIVERGED, EXIT_PREEMPTED
from tests.helpers import minimal_sft, run_main, summary, write_config

pytestmark = pytest.mark.slow


def _config(model, data, out, **training_args):
    config = minimal_sft(model, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no", "output_dir": str(out), "seed": 11,
        **training_args,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2}
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    config["run_conf"]["determinism"] = "full"
    return config


def _start(path):
    # Unbuffered, so that the log lines arrive as the steps happen (not 8 KiB at a time).
    return subprocess.Popen(
        [sys.executable, "-m", "finetuning", "sft", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.full
def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, tiny_llama, chat_data):
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", _config(tiny_llama, chat_data, out, max_steps=40))
    process = _start(path)
    seen = 0
    for line in process.stdout:
        seen += "'loss'" in line
        if seen == 5:
            process.send_signal(signal.SIGTERM)
            break
    output = process.stdout.read()
    assert process.wait(timeout=120) == EXIT_PREEMPTED, output[-3000:]
    assert "received SIGTERM: finishing the current step, then saving a checkpoint" in output
    checkpoints = sorted(out.glob("checkpoint-[0-9]*"))
    assert len(checkpoints) == 1 and not (out / "checkpoint-final").exists()
    step = int(checkpoints[0].name.split("-")[1])
    assert 5 <= step < 40
    assert f"stopped by SIGTERM after step {step} and saved {checkpoints[0]}" in output
    result = run_main("sft", path)  # the resume need not be a process of its own
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming from {checkpoints[0]}" in result.stderr
    assert summary(out)["steps"] == 40


@pytest.mark.full
def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(
    tmp_path, tiny_llama, chat_data_small
):
    steps = 12
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    kwargs = {"max_steps": steps, "save_strategy": "steps", "save_steps": 1}
    # Only the killed run must be a process; the straight run and the resume run in this one.
    result = run_main(
        "sft",
        write_config(tmp_path / "a.yaml", _config(tiny_llama, chat_data_small, straight, **kwargs)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kill_after = random.Random(1234).randint(4, steps - 4)
    path = write_config(tmp_path / "b.yaml", _config(tiny_llama, chat_data_small, killed, **kwargs))
    process = _start(path)
    deadline = time.monotonic() + 120
    while not (killed / f"checkpoint-{kill_after}" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, (
            "the run ended before the kill"
        )
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "checkpoint-final").exists()
    result = run_main("sft", path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    reference, resumed = (
        _weights(straight / "checkpoint-final"),
        _weights(killed / "checkpoint-final"),
    )
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-6, rtol=1e-5)


def test_non_finite_gradients_stop_the_run_and_keep_the_checkpoints(
    tmp_path, tiny_llama, chat_data_small, monkeypatch
):
    """NaN is injected into the loss at step 4 (through the trainer's compute_loss)."""
    from transformers import Trainer

    from finetuning.cli import main

    original = Trainer.compute_loss

    def poisoned(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        return loss * float("nan") if self.state.global_step == 3 else loss

    monkeypatch.setattr(Trainer, "compute_loss", poisoned)
    out = tmp_path / "out"
    config = _config(
        tiny_llama, chat_data_small, out, max_steps=10, save_strategy="steps", save_steps=1
    )
    config["run_conf"]["determinism"] = "no"
    code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    assert code == EXIT_DIVERGED
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-1",
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert not (out / "checkpoint-final").exists()
    before = _weights(out / "checkpoint-3")
    assert all(torch.isfinite(t).all() for t in before.values())


def test_non_finite_stop_message_names_the_step(
    tmp_path, tiny_llama, chat_data_small, monkeypatch, capsys
):
    from transformers import Trainer

    from finetuning.cli import main

    original = Trainer.compute_loss
    monkeypatch.setattr(
        Trainer, "compute_loss",
        lambda self, *a, **k: original(self, *a, **k) * (float("inf") if self.state.global_step == 1 else 1.0),
    )  # fmt: skip
    out = tmp_path / "out"
    code = main(
        [
            "sft",
            str(
                write_config(
                    tmp_path / "c.yaml", _config(tiny_llama, chat_data_small, out, max_steps=5)
                )
            ),
        ]
    )
    assert code == EXIT_DIVERGED
    assert "the gradients became non-finite at step 2" in capsys.readouterr().err


def test_save_total_limit_keeps_a_complete_checkpoint(tmp_path, tiny_llama, chat_data_small):
    from finetuning.train.safety.checkpoints import checkpoint_problem

    out = tmp_path / "out"
    config = _config(
        tiny_llama,
        chat_data_small,
        out,
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=1,
    )
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr[-3000:]
    (only,) = out.glob("checkpoint-[0-9]*")
    assert only.name == "checkpoint-6" and checkpoint_problem(only) is None


def test_a_checkpoint_truncated_mid_write_is_skipped_on_resume(
    tmp_path, tiny_llama, chat_data_small
):
    out = tmp_path / "out"
    path = write_config(
        tmp_path / "c.yaml",
        _config(tiny_llama, chat_data_small, out, max_steps=6, save_strategy="steps", save_steps=3),
    )
    assert run_main("sft", path).returncode == 0
    shutil.rmtree(out / "checkpoint-final")
    weights = out / "checkpoint-6" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # the node died mid-write
    result = run_main("sft", path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "skipping incomplete checkpoint" in result.stderr
        and "checkpoint-6: model.safetensors: truncated" in result.stderr
    )
    assert f"resuming from {out / 'checkpoint-3'}" in result.stderr


def test_full_disk_is_detected_before_training(
    tmp_path, tiny_llama, chat_data_small, monkeypatch, capsys
):
    import shutil as shutil_module
    from collections import namedtuple

    from finetuning.cli import main

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil_module, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    code = main(
        [
            "sft",
            str(
                write_config(
                    tmp_path / "c.yaml",
                    _config(tiny_llama, chat_data_small, tmp_path / "o", max_steps=2),
                )
            ),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "training_args.output_dir" in err and "GiB free" in err


def test_pickle_only_weights_need_an_explicit_opt_in(tmp_path, tiny_llama, chat_data_small):
    from transformers import AutoModelForCausalLM

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    model = AutoModelForCausalLM.from_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    config = _config(pickled, chat_data_small, tmp_path / "o", max_steps=1)
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "set run_conf.model_args.use_safetensors: false" in result.stderr


def test_remote_code_models_say_what_to_set(tmp_path, tiny_llama, chat_data_small):
    import json

    custom = tmp_path / "custom"
    shutil.copytree(tiny_llama, custom)
    config_json = json.loads((custom / "config.json").read_text())
    config_json.update(
        model_type="my-custom-llm",
        auto_map={
            "AutoConfig": "configuration.MyConfig",
            "AutoModelForCausalLM": "modeling.MyModel",
        },
    )
    (custom / "config.json").write_text(json.dumps(config_json))
    config = _config(custom, chat_data_small, tmp_path / "o", max_steps=1)
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "set run_conf.model_args.trust_remote_code: true if you trust it" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_user_string_reaches_a_shell():
    source = Path(__file__).resolve().parents[2] / "src"
    text = "\n".join(p.read_text() for p in source.rglob("*.py"))
    for pattern in ("shell=True", "os.system(", "os.popen(", "subprocess"):
        assert pattern not in text, pattern
