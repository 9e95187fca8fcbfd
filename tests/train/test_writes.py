"""The package's one atomic write: whole or unchanged, nothing left beside the file."""

from __future__ import annotations

import pytest

from finetuning.train.safety.writes import atomic_write_text, atomic_writer


def test_an_error_inside_the_block_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_writer(path) as out:
        out.write("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["answers.jsonl"]


def test_a_finished_block_replaces_the_file_and_creates_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "out.yaml"
    with atomic_writer(path) as out:
        out.writelines(["a\n", "b\n"])
    atomic_write_text(tmp_path / "t.json", "{}\n")
    assert path.read_text() == "a\nb\n"
    assert (tmp_path / "t.json").read_text() == "{}\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.yaml"]
