"""The seven reference configs of the established engine train unchanged on tiny local models.

Only `attn_implementation` and `bf16` are overridden, because they need a GPU; unmodified, a
training run stops with a clear error before loading the model and `validate` warns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from finetuning.testing import build_model, synthetic_chats, synthetic_preferences, write_jsonl
from tests.conftest import REFERENCE_CONFIGS
from tests.helpers import run_main

pytestmark = pytest.mark.slow

# The engine-test config runs verbatim (bf16 included) in test_reference_engine_test_config.py.
SFT_CONFIGS = sorted(
    p
    for p in REFERENCE_CONFIGS.glob("sft-*.yaml")
    if "mlflow" not in p.name and "engine-test" not in p.name
)
#: The longest reference runs: the full suite only (the others keep each kind in the fast tier).
FULL_ONLY = {"sft-full-qwen-chatml-6-datasets.yaml", "sft-lora-mixtral-keep-original.yaml"}


@pytest.fixture(scope="module")
def reference_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    for i in range(6):
        write_jsonl(root / "data" / f"chat-{i}.jsonl", synthetic_chats(20, seed=i))
    write_jsonl(root / "data" / "preference-0.jsonl", synthetic_preferences(40, seed=0))
    build_model(root / "llama", "llama")
    build_model(root / "qwen2", "qwen2")
    return root


def expand(path: Path, root: Path, tmp_path: Path, cpu: bool = True) -> tuple[Path, dict]:
    """The config with placeholders expanded (and, for CPU, the two GPU-only values replaced)."""
    model = root / ("qwen2" if "qwen" in path.name else "llama")
    env = {**os.environ, "MODEL_DIR": str(model), "DATA_DIR": str(root / "data"),
           "MLFLOW_URI": str(tmp_path / "mlruns"), "CHECKPOINTS_PATH": str(tmp_path / "ckpt"),
           "LOGS_PATH": str(tmp_path / "logs")}  # fmt: skip
    text = path.read_text()
    for key in ("MODEL_DIR", "DATA_DIR", "MLFLOW_URI"):
        text = text.replace("${" + key + "}", env[key])
    if cpu:
        text = re.sub(r"attn_implementation: flash_attention_2", "attn_implementation: sdpa", text)
        text = re.sub(r"bf16: true", "bf16: false", text)
    out = tmp_path / path.name
    out.write_text(text)
    return out, env


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.full) if p.name in FULL_ONLY else p for p in SFT_CONFIGS],
    ids=lambda p: p.name,
)
def test_reference_sft_config_trains(path, reference_env, tmp_path):
    config, env = expand(path, reference_env, tmp_path)
    changed = [
        (a, b) for a, b in zip(path.read_text().splitlines(), config.read_text().splitlines(), strict=True)
        if a != b and "${" not in a
    ]  # fmt: skip
    assert all("attn_implementation" in a or "bf16" in a for a, _ in changed), changed
    result = run_main("sft", config, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    final = tmp_path / "ckpt" / "checkpoint-final"
    assert final.is_dir()
    assert "run summary" in result.stderr


@pytest.mark.parametrize(
    "path", [REFERENCE_CONFIGS / "sft-lora-mistral-template.yaml"], ids=lambda p: p.name
)
def test_gpu_only_values_stop_training_before_loading_and_validate_warns(
    path, reference_env, tmp_path
):
    config, env = expand(path, reference_env, tmp_path, cpu=False)
    assert yaml.safe_load(config.read_text())["training_args"]["bf16"] is True
    result = run_main("sft", config, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "flash_attention_2 needs a CUDA GPU" in result.stderr
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    result = run_main("validate", config, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "flash_attention_2 needs a CUDA GPU" in result.stderr
    from finetuning.model.hardware import cpu_has_bf16

    if not cpu_has_bf16():
        assert "training_args.bf16: this CPU has no bfloat16 support" in result.stderr


def test_reference_dpo_config_trains(reference_env, tmp_path):
    config, env = expand(REFERENCE_CONFIGS / "dpo-full-tinyllama.yaml", reference_env, tmp_path)
    result = run_main("dpo", config, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "ckpt" / "checkpoint-final" / "model.safetensors").is_file()
    assert "rewards: accuracy" in result.stderr
