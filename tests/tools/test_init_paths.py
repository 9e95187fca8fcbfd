"""`finetuning init PATH` where PATH is not a folder: a located error, nothing written."""

from __future__ import annotations

import pytest

from finetuning.cli import main


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("under", [False, True])
def test_init_on_a_regular_file_is_a_user_error(tmp_path, capsys, force, under):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    target = file / "example" if under else file
    code = main(["init", str(target), *force])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{target} is " in err and "not a folder" in err and "Traceback" not in err
    assert file.read_text() == "mine"
