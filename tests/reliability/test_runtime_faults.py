"""Runtime faults without a training run: the output-dir lock, incomplete checkpoints, a damaged
or unwritable data cache, a full disk, signals, DPO pairs that teach nothing, generate's input
and output, truncated weights, a template that raises, an adapter on the wrong base."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetuning.cli import main
from finetuning.config.data import ChatTemplateName as T
from finetuning.config.data import ChatTrainValidConfig
from finetuning.data.encode import EncodeSettings, TokenStore
from finetuning.data.prepare import cache_root, prepare_data
from finetuning.errors import UserError
from finetuning.testing import build_model, synthetic_chats, synthetic_preferences, write_jsonl
from finetuning.train.safety.checkpoints import checkpoint_problem, latest_checkpoint
from tests.helpers import minimal_dpo, minimal_sft, write_config

# --- 2: the output-dir lock -------------------------------------------------------------------

HOLD = (
    "import sys; from pathlib import Path; from finetuning.train.safety import lock; "
    "lock.acquire(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"
)


def test_a_live_holder_is_named_and_other_ranks_do_not_take_the_lock(tmp_path):
    from finetuning.train.safety import lock

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as caught:
            lock.acquire(tmp_path)
        message = str(caught.value)
        assert (
            f"is in use by another run: pid {holder.pid} on host {socket.gethostname()}" in message
        )
        # A non-main rank of the holder's run neither fails nor touches the lock.
        before = (tmp_path / lock.LOCK_NAME).read_text()
        assert lock.acquire(tmp_path, is_main=False) is None
        assert (tmp_path / lock.LOCK_NAME).read_text() == before
    finally:
        holder.communicate("", timeout=30)
    # Once the holder has ended (lock file removed at exit) the folder is free.
    assert not (tmp_path / lock.LOCK_NAME).exists()
    assert lock.acquire(tmp_path) == tmp_path / lock.LOCK_NAME
    lock.release()
    assert not (tmp_path / lock.LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, caplog):
    from finetuning.train.safety import lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"host": socket.gethostname(), "pid": dead.pid, "started": "yesterday"}
    (tmp_path / lock.LOCK_NAME).write_text(json.dumps(stale))  # left by a SIGKILLed run
    with caplog.at_level(logging.WARNING, logger="finetuning.train.safety.lock"):
        lock.acquire(tmp_path)
    try:
        assert f"left by pid {dead.pid} on host {socket.gethostname()}" in caplog.text
        assert "no longer running" in caplog.text
        held = json.loads((tmp_path / lock.LOCK_NAME).read_text())
        assert held["pid"] == os.getpid()
    finally:
        lock.release()


# --- 8: a checkpoint is complete only when everything the resume loads is readable ------------


def _fake_checkpoint(folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    save_file({"w": torch.ones(4)}, folder / "model.safetensors")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 1}))
    torch.save({"state": {0: torch.ones(4)}}, folder / "optimizer.pt")
    torch.save({"last_epoch": 1}, folder / "scheduler.pt")
    torch.save({"python": 1}, folder / "rng_state.pth")
    return folder


def test_an_empty_optimizer_file_makes_the_checkpoint_incomplete(tmp_path, caplog):
    older = _fake_checkpoint(tmp_path / "checkpoint-2")
    newer = _fake_checkpoint(tmp_path / "checkpoint-4")
    assert checkpoint_problem(newer) is None
    (newer / "optimizer.pt").write_bytes(b"")  # power loss after trainer_state.json
    assert checkpoint_problem(newer) == "optimizer.pt: empty (0 bytes)"
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == older
    assert "skipping incomplete checkpoint" in caplog.text and "optimizer.pt: empty" in caplog.text
    data = (older / "rng_state.pth").read_bytes()
    (older / "rng_state.pth").write_bytes(data[: len(data) // 2])
    assert checkpoint_problem(older).startswith("rng_state.pth: truncated or corrupt")
    assert latest_checkpoint(tmp_path) is None


# --- 9: the data cache ---------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="module")
def sft_conf(tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("d") / "c.jsonl", synthetic_chats(16, seed=3))
    return ChatTrainValidConfig.model_validate(
        {"training_data": {"type": "CONCATENATION", "datasets": [{"path": str(path)}]}}
    )


SETTINGS = EncodeSettings(T.KEEP_ORIGINAL, 512)


def test_an_empty_cache_file_is_rebuilt_with_a_warning(cache_dir, sft_conf, tiny_tokenizer, caplog):
    from finetuning.data.prepare import cache_problem

    first = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert not first.cache_hit and cache_problem(first.cache_path) is None
    (first.cache_path / "input_ids.npy").write_bytes(b"")  # the disk filled while writing
    with caplog.at_level(logging.WARNING):
        second = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert "is damaged: input_ids.npy has 0 bytes" in caplog.text and "rebuilding it" in caplog.text
    assert not second.cache_hit
    np.testing.assert_array_equal(second.train.store.input_ids, first.train.store.input_ids)
    third = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert third.cache_hit  # the rebuilt entry is good again


def test_a_cache_file_with_flipped_bytes_is_rebuilt(cache_dir, sft_conf, tiny_tokenizer, caplog):
    first = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    path = first.cache_path / "labels.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert "labels.npy does not match its checksum" in caplog.text and not again.cache_hit
    np.testing.assert_array_equal(again.train.store.labels, first.train.store.labels)


def test_an_unusable_cache_dir_means_no_caching_said_once(
    tmp_path, monkeypatch, sft_conf, tiny_tokenizer, caplog
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    with caplog.at_level(logging.WARNING):
        data = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert len(data.train) == 16
    assert (
        "cannot write the data cache" in caplog.text and "going on without caching" in caplog.text
    )


def test_a_full_cache_disk_leaves_no_partial_entry(
    cache_dir, monkeypatch, sft_conf, tiny_tokenizer, caplog
):
    def full(self, folder):
        np.save(folder / "input_ids.npy", self.input_ids)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TokenStore, "save", full)
    with caplog.at_level(logging.WARNING):
        data = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
    assert len(data.train) == 16
    assert "no space left on the device" in caplog.text
    assert list(cache_root().iterdir()) == []  # neither the entry nor its temporary folder


def test_a_really_full_tmpfs_cache(tmp_path, monkeypatch, sft_conf, tiny_tokenizer, caplog):
    """The same on a real 16 KiB tmpfs, where the machine lets us mount one (root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode()[:200]}")
    try:
        monkeypatch.setenv("FINETUNING_CACHE_DIR", str(mount))
        with caplog.at_level(logging.WARNING):
            data = prepare_data(sft_conf, tiny_tokenizer, SETTINGS)
        assert len(data.train) == 16
        assert "no space left on the device" in caplog.text
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --- 11: a full disk is one message naming the folder -------------------------------------------


def test_write_errors_from_a_full_disk_name_the_folder(tmp_path):
    from finetuning.train.safety.writes import no_space_error, watch

    watch(tmp_path)
    plain = no_space_error(OSError(errno.ENOSPC, "No space left on device"))
    assert plain is not None and str(plain).startswith(f"no space left on {tmp_path} (")
    named = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "sub" / "f.json"))
    assert f"no space left on {tmp_path / 'sub'}" in str(no_space_error(named))
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
    assert f"no space left on {tmp_path}" in str(no_space_error(torch_error))
    assert no_space_error(RuntimeError("something else")) is None
    assert no_space_error(OSError(errno.EACCES, "Permission denied")) is None


def test_a_full_disk_while_writing_reports_is_exit_2(tmp_path, tiny_llama, chat_data_small,
                                                     monkeypatch, capsys):  # fmt: skip
    """ENOSPC injected where the run writes its preflight report (before the model loads)."""
    original = Path.write_text

    def full(self, *args, **kwargs):
        if self.name == "data_preflight.txt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    config = minimal_sft(tiny_llama, chat_data_small)
    config["training_args"] = {"max_steps": 1, "output_dir": str(tmp_path / "out")}
    code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"no space left on {tmp_path / 'out'}" in err and "Traceback" not in err


# --- 10: signals outside the training loop ------------------------------------------------------


def test_the_run_handler_stops_before_training_and_defers_in_the_final_save():
    from finetuning.train.safety import interrupts

    previous = signal.getsignal(signal.SIGTERM)
    interrupts.install()
    try:
        with pytest.raises(interrupts.Interrupted, match="stopped by SIGTERM before training"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
        finished = False
        with interrupts.deferred("the final save"):
            os.kill(os.getpid(), signal.SIGTERM)
            finished = True
        assert finished and interrupts._State.received == "SIGTERM"
    finally:
        interrupts.restore()
    assert signal.getsignal(signal.SIGTERM) == previous


def _raise_test_failure(signum, frame):
    raise AssertionError(f"signal {signum} reached the test's own handler: the run has none")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_cache_is_written_exits_75_and_leaves_it_valid(
    signum, tmp_path, cache_dir, tiny_llama, chat_data_small, monkeypatch, capsys
):
    """The signal is delivered inside TokenStore.save (half of the arrays written)."""
    old = signal.signal(signal.SIGTERM, _raise_test_failure)  # the original code has no handler
    original, hit = TokenStore.save, []

    def interrupted(self, folder):
        np.save(folder / "input_ids.npy", self.input_ids)
        hit.append(folder)
        os.kill(os.getpid(), signum)
        original(self, folder)

    monkeypatch.setattr(TokenStore, "save", interrupted)
    config = minimal_sft(tiny_llama, chat_data_small)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {"max_steps": 1, "output_dir": str(tmp_path / "out")}
    try:
        code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err
    assert hit, "the signal was not delivered while the cache was written"
    assert code == 75, err
    name = signal.Signals(signum).name
    assert f"stopped by {name} before training started (nothing was half-written)" in err
    assert list(cache_dir.iterdir()) == []  # no entry, no temporary folder
    assert not (tmp_path / "out" / ".finetuning.lock").exists()  # the lock was given back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- 6: DPO pairs with chosen == rejected ------------------------------------------------------


def _dpo_config(tmp_path, model, rows):
    data = write_jsonl(tmp_path / "prefs.jsonl", rows)
    config = minimal_dpo(model, data)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {"output_dir": str(tmp_path / "out")}
    return write_config(tmp_path / "dpo.yaml", config)


def test_identical_pairs_are_counted_and_dropped(tmp_path, cache_dir, tiny_llama, capsys):
    rows = synthetic_preferences(8, seed=4)
    for row in rows[:3]:
        row["rejected_messages"] = [dict(m) for m in row["chosen_messages"]]
    code = main(["validate", str(_dpo_config(tmp_path, tiny_llama, rows))])
    out = capsys.readouterr()
    assert code == 0, out.err
    text = out.out + out.err
    assert "3 preference rows have identical chosen and rejected completions" in text
    assert "training rows: 5;" in text


def test_an_all_identical_dpo_dataset_is_a_user_error(tmp_path, cache_dir, tiny_llama, capsys):
    rows = synthetic_preferences(4, seed=5)
    for row in rows:
        row["rejected_messages"] = [dict(m) for m in row["chosen_messages"]]
    code = main(["validate", str(_dpo_config(tmp_path, tiny_llama, rows))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "every preference row has identical chosen and rejected completions (4 rows" in err


# --- 7 and 12: generate and chat ---------------------------------------------------------------


def _prompts(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": i, "messages": [{"role": "user", "content": f"q{i}"}]})
                            + "\n" for i in range(n)))  # fmt: skip
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Generate must refuse bad input before it loads a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("finetuning.tools.generate.load_for_inference", refuse)


def test_generate_refuses_input_as_output(tmp_path, no_model, capsys):
    source = _prompts(tmp_path / "in.jsonl")
    before = source.read_text()
    code = main(["generate", "--model", "m", "--input", str(source), "--output", str(source)])
    assert code == 2 and "is the input file" in capsys.readouterr().err
    assert source.read_text() == before


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [\n', ":2: invalid JSON"),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe",
            ":1: not valid UTF-8 (byte 0): is it a binary file?",
        ),
        (
            b'[{"role": "user", "content": "a"}]\n',
            ":1: a row needs `prompt_messages` or `messages`",
        ),
        (b'{"prompt_messages": "hello"}\n', ":1: `prompt_messages` must be a non-empty list"),
        (b'{"messages": [["user", "hi"]]}\n', ":1: `messages[0]` must be a message"),
    ],
)
def test_bad_generate_input_leaves_the_old_output_alone(content, expected, tmp_path, no_model,
                                                        capsys):  # fmt: skip
    source, out = tmp_path / "in.jsonl", tmp_path / "answers.jsonl"
    source.write_bytes(content)
    out.write_text('{"answer": "from yesterday"}\n')
    code = main(["generate", "--model", "m", "--input", str(source), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and "Traceback" not in err
    assert out.read_text() == '{"answer": "from yesterday"}\n'


def test_a_failure_while_generating_keeps_the_old_output(tmp_path, tiny_llama, monkeypatch):
    import finetuning.tools.generate as generate

    source, out = _prompts(tmp_path / "in.jsonl", 3), tmp_path / "answers.jsonl"
    out.write_text("old answers\n")
    calls = []
    original = generate.generate_batch

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (injected)")
        return original(*args, **kwargs)

    monkeypatch.setattr(generate, "generate_batch", fails_second)
    argv = ["generate", "--model", str(tiny_llama), "--input", str(source), "--output", str(out),
            "--batch-size", "1", "--max-new-tokens", "2"]  # fmt: skip
    with pytest.raises(RuntimeError, match="injected"):
        main(argv)
    assert out.read_text() == "old answers\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "in.jsonl"]
    monkeypatch.setattr(generate, "generate_batch", original)
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_max_new_tokens_must_be_positive(command, tmp_path, no_model, capsys):
    argv = ["chat", "m"] if command == "chat" else [
        "generate", "--model", "m", "--input", str(_prompts(tmp_path / "in.jsonl")),
        "--output", str(tmp_path / "o.jsonl")]  # fmt: skip
    assert main([*argv, "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens must be at least 1, got 0" in capsys.readouterr().err


def test_chat_skips_a_line_that_is_not_utf8(monkeypatch, capsys):
    monkeypatch.setattr("finetuning.tools.generate.load_for_inference", lambda *a: (None, None))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n/exit\n")))
    assert main(["chat", "m"]) == 0
    assert "that line is not valid UTF-8 at byte 3; ignored" in capsys.readouterr().out


# --- 12: truncated weights, a template that raises, an adapter on the wrong base --------------


def test_a_truncated_model_file_is_named(tmp_path, tiny_llama, chat_data_small, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    config = minimal_sft(model, chat_data_small)
    config["data_conf"]["chat_template_name"] = "keep-original"
    config["training_args"] = {"max_steps": 1, "output_dir": str(tmp_path / "out")}
    code = main(["sft", str(write_config(tmp_path / "c.yaml", config))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"run_conf.model: the weights file {weights} is truncated (5000 bytes, needs" in err
    code = main(["generate", "--model", str(model), "--input", str(_prompts(tmp_path / "p.jsonl")),
                 "--output", str(tmp_path / "o.jsonl")])  # fmt: skip
    assert code == 2 and f"the weights file {weights} is truncated" in capsys.readouterr().err


ALTERNATING = (  # like Mistral's and Llama-2's: an optional system turn, then user/assistant
    "{{ bos_token }}{% set ns = namespace(turns=messages) %}"
    "{% if messages[0]['role'] == 'system' %}{% set ns.turns = messages[1:] %}{% endif %}"
    "{% for message in ns.turns %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% endfor %}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_a_template_that_raises_names_the_row(method, tmp_path, tiny_llama, cache_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_llama, model)
    (model / "chat_template.jinja").write_text(ALTERNATING)
    if method == "sft":
        rows = synthetic_chats(4, seed=2)
        rows[2]["messages"] = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                               {"role": "assistant", "content": "c"}]  # fmt: skip
        config = minimal_sft(model, write_jsonl(tmp_path / "d.jsonl", rows))
    else:
        rows = synthetic_preferences(4, seed=2)
        rows[2]["prompt_messages"] = [{"role": "user", "content": "a"}, *rows[2]["prompt_messages"]]
        config = minimal_dpo(model, write_jsonl(tmp_path / "d.jsonl", rows))
    config["data_conf"]["chat_template_name"] = "keep-original"
    code = main(["validate", str(write_config(tmp_path / "c.yaml", config))])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "d.jsonl:3: the tokenizer's chat template (keep-original) refused" in err
    assert "Conversation roles must alternate" in err and "Traceback" not in err


def test_merging_an_adapter_into_a_base_of_another_shape(tmp_path, tiny_llama, capsys):
    import peft
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    lora = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft.get_peft_model(model, lora).save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(adapter)
    other = build_model(tmp_path / "narrow", "llama", hidden_size=32)
    code = main(["merge-adapter", str(other), str(adapter), str(tmp_path / "merged")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"the adapter {str(adapter)!r} does not fit the base model {str(other)!r}" in err
    assert "lora_A.default.weight" in err and "Traceback" not in err
    assert not (tmp_path / "merged").exists()
