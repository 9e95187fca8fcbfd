"""merge_adapter (outputs equal base + adapter) and create_vllm_compatible_adapter."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow


def _console(name, *args):
    """Run a console script as an installed user would (through its entry point)."""
    code = f"import sys; from finetuning.tools.{name} import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True
    )


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


@pytest.mark.parametrize(
    "fixture", [pytest.param("lora_embeddings", marks=pytest.mark.full), "lora_new_tokens"]
)
def test_merged_model_equals_base_plus_adapter(fixture, request, tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetuning.tools.inference import load_for_inference

    out = request.getfixturevalue(fixture)
    adapter = out / "checkpoint-final"
    merged_dir = tmp_path / "merged"
    # Given the original base: the resized base is found automatically when tokens were added.
    result = _console(
        "merge_adapter", tiny_llama, adapter, merged_dir, "--device_map", '{"": "cpu"}'
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if fixture == "lora_new_tokens":
        assert "checkpoint-new-basemodel" in result.stderr
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    reference, tokenizer = load_for_inference(str(tiny_llama), str(adapter))
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "what color is the apple?"}],
        add_generation_prompt=True,
        return_dict=True,
    )["input_ids"]
    torch.testing.assert_close(_logits(merged, ids), _logits(reference, ids), atol=1e-4, rtol=1e-4)
    assert (merged_dir / "model.safetensors").is_file()
    saved = AutoTokenizer.from_pretrained(merged_dir)
    assert saved.eos_token == tokenizer.eos_token
    # Stop at the end-of-turn marker first (and at the base's own EOS, where that differs).
    stop = merged.generation_config.eos_token_id
    stop = stop if isinstance(stop, list) else [stop]
    assert stop[0] == saved.eos_token_id
    assert merged.config.eos_token_id in (stop, stop[0])


def test_merge_says_which_base_it_needs(lora_new_tokens, tmp_path, tiny_llama):
    copy = tmp_path / "adapter"
    shutil.copytree(lora_new_tokens / "checkpoint-final", copy)  # no new base model beside it
    result = _console("merge_adapter", tiny_llama, copy, tmp_path / "m")
    assert result.returncode == 2
    assert "use the resized base that training saved as checkpoint-new-basemodel/" in result.stderr


def test_merge_rejects_bad_device_map_json(lora_embeddings, tmp_path, tiny_llama):
    result = _console(
        "merge_adapter",
        tiny_llama,
        lora_embeddings / "checkpoint-final",
        tmp_path / "m",
        "--device_map",
        "{oops",
    )
    assert result.returncode == 2 and "--device_map: not valid JSON" in result.stderr


def test_vllm_adapter_keeps_only_lora_tensors_and_is_idempotent(lora_embeddings, tmp_path):
    from safetensors.torch import load_file

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_embeddings / "checkpoint-final", adapter)
    before = load_file(adapter / "adapter_model.safetensors")
    assert any(".lora_" not in k for k in before)  # PEFT saved the embedding matrix
    result = _console("vllm_adapter", adapter)
    assert result.returncode == 0, result.stderr
    after = load_file(adapter / "adapter_model.safetensors")
    assert after and all(".lora_" in k for k in after)
    assert set(after) == {k for k in before if ".lora_" in k}
    backup = adapter / "old_with_extra_layers_adapter_model.safetensors"
    assert set(load_file(backup)) == set(before)
    snapshot = (adapter / "adapter_model.safetensors").read_bytes(), backup.read_bytes()
    again = _console("vllm_adapter", adapter)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert ((adapter / "adapter_model.safetensors").read_bytes(), backup.read_bytes()) == snapshot


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"peft_conf": {"peft_type": "NO_PEFT"}}, "NO_PEFT"),
        pytest.param({"modules_to_save": ["lm_head"]}, "modules_to_save", marks=pytest.mark.full),
        pytest.param(
            {"chat_template_name": "chat-ml"},
            "added tokens to the vocabulary",
            marks=pytest.mark.full,
        ),
    ],
)
def test_vllm_adapter_left_alone_when_extra_layers_were_trained(
    change, reason, lora_embeddings, lora_new_tokens, tmp_path
):
    source = lora_new_tokens if "chat_template_name" in change else lora_embeddings
    adapter = tmp_path / "adapter"
    shutil.copytree(source / "checkpoint-final", adapter)
    config = yaml.safe_load((source / "resolved_config.yaml").read_text())
    if "peft_conf" in change:
        config["peft_conf"] = change["peft_conf"]
    if "modules_to_save" in change:
        config["peft_conf"]["peft_kwargs"]["modules_to_save"] = change["modules_to_save"]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    original = (adapter / "adapter_model.safetensors").read_bytes()
    result = _console("vllm_adapter", adapter, "--training-config", path)
    assert result.returncode == 0, result.stderr
    assert "unchanged" in result.stdout and reason in result.stdout
    assert (adapter / "adapter_model.safetensors").read_bytes() == original
    assert not (adapter / "old_with_extra_layers_adapter_model.safetensors").exists()
