"""resume_from_checkpoint: false / true / auto / a path."""

from __future__ import annotations

import pytest

from finetuning.errors import UserError
from finetuning.train.safety.checkpoints import latest_checkpoint, resolve_resume


def _checkpoint(root, name, complete=True):
    import torch
    from safetensors.torch import save_file

    folder = root / name
    folder.mkdir(parents=True)
    save_file({"w": torch.ones(64)}, folder / "model.safetensors")
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_truncated_or_corrupt_checkpoints_are_skipped_with_the_reason(tmp_path, caplog):
    good = _checkpoint(tmp_path, "checkpoint-1")
    truncated = _checkpoint(tmp_path, "checkpoint-2")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) - 40])
    bad_state = _checkpoint(tmp_path, "checkpoint-3")
    (bad_state / "trainer_state.json").write_text('{"global_step": 3, "log_hi')
    _checkpoint(tmp_path, "checkpoint-4", complete=False)
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path) == good
    text = caplog.text
    assert "checkpoint-4: no trainer_state.json" in text
    assert "checkpoint-3: trainer_state.json is truncated or corrupt" in text
    assert "checkpoint-2: model.safetensors: truncated" in text


def test_auto_takes_the_highest_numbered_complete_checkpoint(tmp_path):
    _checkpoint(tmp_path, "checkpoint-9")
    best = _checkpoint(tmp_path, "checkpoint-10")
    _checkpoint(tmp_path, "checkpoint-11", complete=False)
    _checkpoint(tmp_path, "checkpoint-final")
    _checkpoint(tmp_path, "checkpoint-12x")
    assert latest_checkpoint(tmp_path) == best
    assert resolve_resume("auto", tmp_path) == str(best)


def test_auto_without_checkpoints_starts_fresh(tmp_path):
    assert resolve_resume("auto", tmp_path / "missing") is None


def test_false_is_always_fresh(tmp_path):
    _checkpoint(tmp_path, "checkpoint-3")
    assert resolve_resume(False, tmp_path) is None


def test_true_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(UserError, match="has no checkpoint-N folder"):
        resolve_resume(True, tmp_path)


def test_explicit_path(tmp_path):
    folder = _checkpoint(tmp_path, "anything")
    assert resolve_resume(str(folder), tmp_path) == str(folder)
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)
