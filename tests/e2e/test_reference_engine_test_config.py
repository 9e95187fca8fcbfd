"""The established engine's own CPU test config runs verbatim: bf16 on a CPU, epochs -1 with
max_steps (issue 24's two regressions)."""

from __future__ import annotations

import os

import pytest
import yaml

from finetuning.testing import build_model, synthetic_chats, write_jsonl
from tests.conftest import REFERENCE_CONFIGS
from tests.helpers import losses, run_main

pytestmark = pytest.mark.slow

CONFIG = REFERENCE_CONFIGS / "sft-lora-engine-test-cpu.yaml"


def _verbatim(tmp_path):
    """The config with only its placeholders expanded, and the environment it runs in."""
    write_jsonl(tmp_path / "data" / "chat-0.jsonl", synthetic_chats(20, seed=0))
    build_model(tmp_path / "llama", "llama")
    env = {**os.environ, "MODEL_DIR": str(tmp_path / "llama"), "DATA_DIR": str(tmp_path / "data"),
           "OUTPUT_DIR": str(tmp_path / "out")}  # fmt: skip
    text = CONFIG.read_text()
    for key in ("MODEL_DIR", "DATA_DIR", "OUTPUT_DIR"):
        text = text.replace("${" + key + "}", env[key])
    config = tmp_path / CONFIG.name
    config.write_text(text)
    args = yaml.safe_load(text)["training_args"]
    assert args["bf16"] is True and args["num_train_epochs"] == -1 and args["max_steps"] == 15
    return config, env


@pytest.mark.full
def test_engine_test_config_validates_with_a_bf16_warning(tmp_path, monkeypatch):
    import finetuning.model.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)  # an AVX2-only CPU
    config, env = _verbatim(tmp_path)
    result = run_main("validate", config, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training_args.bf16: this CPU has no bfloat16 support" in result.stderr
    assert "num_train_epochs" not in result.stderr


def test_engine_test_config_trains_verbatim_on_a_cpu_without_bf16(tmp_path, monkeypatch):
    import finetuning.model.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    config, env = _verbatim(tmp_path)
    result = run_main("sft", config, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "training_args.bf16: this CPU has no bfloat16 support" in result.stderr
    assert (tmp_path / "out" / "checkpoint-final").is_dir()
    assert len(losses(tmp_path / "out")) == 15  # max_steps decided the length, not the epochs
