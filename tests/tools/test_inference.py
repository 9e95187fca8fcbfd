"""Finding the base an adapter needs: the resized base named by the run's saved config."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from finetuning.errors import UserError
from finetuning.tools.inference import resolve_base, saved_basemodel_name


def _model_dir(path, vocab):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"vocab_size": vocab}))
    return path


def _run(tmp_path, base_name, recorded_name):
    """A run folder: the adapter, the resized base under ``base_name``, the saved config."""
    out = tmp_path / "out"
    (out / "checkpoint-final").mkdir(parents=True)
    _model_dir(out / base_name, 40)
    if recorded_name is not None:
        saved = {"method": "sft", "sft_args": {"save_name_if_new_basemodel": recorded_name}}
        (out / "resolved_config.yaml").write_text(yaml.safe_dump(saved))
    return out


def test_a_custom_new_basemodel_name_is_read_from_the_saved_config(tmp_path):
    base = _model_dir(tmp_path / "base", 32)
    out = _run(tmp_path, "grown-base", "grown-base")
    assert resolve_base(str(base), str(out / "checkpoint-final"), 36) == str(out / "grown-base")


def test_without_a_saved_config_the_default_name_is_used(tmp_path):
    base = _model_dir(tmp_path / "base", 32)
    out = _run(tmp_path, "checkpoint-new-basemodel", None)
    assert saved_basemodel_name(out) == "checkpoint-new-basemodel"
    found = resolve_base(str(base), str(out / "checkpoint-final"), 36)
    assert found == str(out / "checkpoint-new-basemodel")


def test_the_error_names_the_folder_the_run_used(tmp_path):
    base = _model_dir(tmp_path / "base", 32)
    out = _run(tmp_path, "elsewhere", "grown-base")
    with pytest.raises(UserError, match="saved as grown-base/ next to"):
        resolve_base(str(base), str(out / "checkpoint-final"), 36)


@pytest.mark.slow
def test_merge_finds_a_custom_named_resized_base(lora_new_tokens, tmp_path, tiny_llama):
    """A run that saved its resized base under sft_args.save_name_if_new_basemodel: merging with
    the original base still finds it."""
    from finetuning.tools.merge_adapter import merge_and_save

    out = tmp_path / "run"
    shutil.copytree(lora_new_tokens, out)
    (out / "checkpoint-new-basemodel").rename(out / "my-grown-base")
    saved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    saved["sft_args"]["save_name_if_new_basemodel"] = "my-grown-base"
    (out / "resolved_config.yaml").write_text(yaml.safe_dump(saved))
    merged = merge_and_save(
        str(tiny_llama), str(out / "checkpoint-final"), tmp_path / "merged", device_map="cpu"
    )
    assert (merged / "model.safetensors").is_file()
