"""Runtime faults around real (tiny) training runs: two runs on one folder, a resume after the
config changed, an empty optimizer file, a full disk while a checkpoint is written, and SIGTERM
during the final save.

One LoRA run (4 steps, checkpoints at 2 and 4) is trained once; each test works on a copy.
"""

from __future__ import annotations

import copy
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetuning.cli import main
from finetuning.train.safety.checkpoints import checkpoint_problem
from finetuning.train.safety.guards import EXIT_PREEMPTED
from tests.helpers import minimal_sft, summary, write_config

pytestmark = pytest.mark.slow


def _config(model, data, out, **training_args):
    config = minimal_sft(model, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {
        "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "steps", "save_steps": 2,
        "max_steps": 4, "output_dir": str(out), "seed": 5, **training_args,
    }  # fmt: skip
    config["batchsize_conf"] = {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2}
    config["peft_conf"] = {
        "peft_type": "LORA",
        "peft_kwargs": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    }
    config["run_conf"]["resume_from_checkpoint"] = "auto"
    return config


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_llama, chat_data_small):
    """(config, output dir) of a finished 4-step LoRA run with checkpoint-2 and checkpoint-4."""
    root = tmp_path_factory.mktemp("lora-run")
    config = _config(tiny_llama, chat_data_small, root / "out")
    assert main(["sft", str(write_config(root / "c.yaml", config))]) == 0
    assert (root / "out" / "checkpoint-4").is_dir() and (root / "out" / "checkpoint-final").is_dir()
    return config, root / "out"


def _copy(lora_run, tmp_path, **changes):
    config, out = lora_run
    target = tmp_path / "out"
    shutil.copytree(out, target)
    config = copy.deepcopy(config)
    config["training_args"]["output_dir"] = str(target)
    config["training_args"].update(changes)
    return config, target


def test_resuming_after_the_config_changed_is_refused(lora_run, tmp_path, chat_data_small, capsys):
    config, out = _copy(lora_run, tmp_path)
    other_data = tmp_path / "other.jsonl"
    other_data.write_text(Path(chat_data_small).read_text().replace("color", "colour"))
    batch, data, rank, full = (copy.deepcopy(config) for _ in range(4))
    batch["batchsize_conf"]["total_train_batch_size"] = 8
    data["data_conf"]["training_data"]["datasets"][0]["path"] = str(other_data)
    rank["peft_conf"]["peft_kwargs"]["r"] = 8
    full["peft_conf"] = {"peft_type": "NO_PEFT"}
    cases = [
        (batch, ["total_train_batch_size: 4 -> 8"]),
        (data, ["data.training_data.datasets[0].sha256: "]),
        (rank, ["adapter.r: 4 -> 8"]),
        (full, ['adapter.peft_type: "LORA" -> "NO_PEFT"', "adapter.r: 4 -> null"]),
    ]
    for changed, expected in cases:
        code = main(["sft", str(write_config(tmp_path / "c.yaml", changed))])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"cannot resume {out / 'checkpoint-4'}: the config changed" in err
        assert "another training_args.output_dir" in err
        assert "run_conf.resume_from_checkpoint: false" in err
        for text in expected:
            assert text in err, err
        assert "Traceback" not in err
    # Each refusal came before anything was written: the checkpoints are as they were.
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-final",
    ]


def test_an_empty_optimizer_file_is_skipped_on_resume(lora_run, tmp_path, caplog):
    config, out = _copy(lora_run, tmp_path)
    (out / "checkpoint-4" / "optimizer.pt").write_bytes(b"")  # power loss after trainer_state
    shutil.rmtree(out / "checkpoint-final")
    with caplog.at_level(logging.INFO, logger="finetuning"):
        assert main(["sft", str(write_config(tmp_path / "c.yaml", config))]) == 0
    assert "skipping incomplete checkpoint" in caplog.text
    assert "checkpoint-4: optimizer.pt: empty (0 bytes)" in caplog.text
    assert f"resuming from {out / 'checkpoint-2'}" in caplog.text
    assert summary(out)["steps"] == 4


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_older_ones(
    lora_run, tmp_path, monkeypatch, capsys
):
    """torch.save fails the way a full disk makes it fail, at checkpoint-6's optimizer."""
    import torch

    config, out = _copy(lora_run, tmp_path, max_steps=8)
    original, hit = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith("checkpoint-6/optimizer.pt"):
            hit.append(f)
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos 4416 vs 4310"
            )
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    err = capsys.readouterr().err
    assert hit, "the injected write error was not reached"
    assert code == 2, err
    assert f"no space left on {out} (" in err and "Traceback" not in err
    for name in ("checkpoint-2", "checkpoint-4"):
        assert checkpoint_problem(out / name) is None
    assert checkpoint_problem(out / "checkpoint-6") is not None  # skipped by the next resume


def _raise_test_failure(signum, frame):
    raise AssertionError("SIGTERM during the final save reached the test's handler")


def test_sigterm_during_the_final_save_finishes_the_save(lora_run, tmp_path, monkeypatch, caplog):
    """The signal is delivered inside save_model of the final save (not a checkpoint's).

    The relaunch also changes what may change across a resume (logging and save frequency).
    """
    from transformers import Trainer

    config, out = _copy(lora_run, tmp_path, logging_steps=3, save_steps=3)
    final = out / "checkpoint-final"
    partial_dir = final.with_name(".checkpoint-final.partial")
    original, windows = Trainer.save_model, []

    def signalled(self, output_dir=None, _internal_call=False):
        if not _internal_call:
            windows.append(Path(output_dir))
            signal.raise_signal(signal.SIGTERM)
        return original(self, output_dir, _internal_call)

    monkeypatch.setattr(Trainer, "save_model", signalled)
    previous = signal.signal(signal.SIGTERM, _raise_test_failure)
    try:
        with caplog.at_level(logging.WARNING, logger="finetuning"):
            code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert windows == [partial_dir], "the signal was not sent in the final save"
    assert code == 0, caplog.text
    assert "received SIGTERM during the final save: finishing the save first" in caplog.text
    assert "the final save finished despite SIGTERM" in caplog.text
    assert (final / "adapter_model.safetensors").is_file()
    assert (final / "tokenizer_config.json").is_file()
    assert not partial_dir.exists()


@pytest.mark.full
def test_a_second_run_on_the_same_output_dir_exits_2_naming_the_first(
    tmp_path, tiny_llama, chat_data_small, capsys
):
    """The first run is a separate process; the second goes through the same entry point here."""
    lock_name = ".finetuning.lock"
    out = tmp_path / "out"
    config = _config(tiny_llama, chat_data_small, out, max_steps=5000, save_strategy="no")
    path = write_config(tmp_path / "c.yaml", config)
    log = tmp_path / "first.log"
    with log.open("w") as sink:
        first = subprocess.Popen([sys.executable, "-m", "finetuning", "sft", str(path)],
                                 stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        lock_file = out / lock_name
        while not (lock_file.exists() and f'"pid": {first.pid}' in lock_file.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # A short second run (so that, were it not refused, it would end soon).
        second = write_config(tmp_path / "second.yaml", {**config, "training_args": {
            **config["training_args"], "max_steps": 1}})  # fmt: skip
        code = main(["sft", str(second)])
        err = capsys.readouterr().err
        assert first.poll() is None, "the first run ended before the second was refused"
        assert code == 2, err
        assert f"is in use by another run: pid {first.pid} on host" in err
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=180)
    assert first.returncode == EXIT_PREEMPTED, log.read_text()[-3000:]
    assert "stopped by SIGTERM" in log.read_text()
    assert not (out / lock_name).exists()  # given back at the end of the first run


def test_resuming_with_another_tokenizer_is_refused(lora_run, tmp_path, tiny_llama, capsys):
    """The fingerprint hashes the tokenizer's files: a renamed copy (replace_tokens) is another
    tokenizer, while the same files in another folder resume as before."""
    from finetuning.tools.replace_tokens import replace_tokens
    from finetuning.train.safety.fingerprint import TOKENIZER_FILES

    config, out = _copy(lora_run, tmp_path)
    renamed = replace_tokens(tiny_llama, tmp_path / "renamed", {"<unk>": "<|unknown|>"})
    same = tmp_path / "same"
    same.mkdir()
    for name in TOKENIZER_FILES:
        if (Path(tiny_llama) / name).is_file():
            shutil.copy(Path(tiny_llama) / name, same / name)
    config["run_conf"]["tokenizer"] = str(renamed)
    code = main(["validate", str(write_config(tmp_path / "c.yaml", config)), "--config-only"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot resume {out / 'checkpoint-4'}" in err and "tokenizer.files_sha256" in err
    config["run_conf"]["tokenizer"] = str(same)
    code = main(["validate", str(write_config(tmp_path / "c.yaml", config)), "--config-only"])
    assert code == 0, capsys.readouterr().err


def test_resuming_with_the_rows_read_another_way_is_refused(lora_run, tmp_path, capsys):
    """A dataset's `format:`, `columns:` or (for datasets by name) subset/split/revision give
    other rows from the same file, so the fingerprint records them; left at their defaults they
    are not recorded, and a fingerprint written before these keys existed still matches."""
    config, out = _copy(lora_run, tmp_path)
    same = copy.deepcopy(config)
    same["data_conf"]["training_data"]["datasets"][0].update(split="train", columns={})
    code = main(["validate", str(write_config(tmp_path / "same.yaml", same)), "--config-only"])
    assert code == 0, capsys.readouterr().err
    config["data_conf"]["training_data"]["datasets"][0]["format"] = "messages"
    code = main(["validate", str(write_config(tmp_path / "c.yaml", config)), "--config-only"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"cannot resume {out / 'checkpoint-4'}" in err
    assert "training_data.datasets[0].format" in err
