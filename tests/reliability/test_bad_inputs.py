"""The bad-input corpus: every broken config or data file is exit 2 with a located message.

Each case in ``corpus/`` is run through the command line's entry point in-process; an
unexpected exception would escape ``main`` and fail the test, so "no traceback" is enforced.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from finetuning.cli import main
from finetuning.testing import build_model, synthetic_chats, synthetic_preferences, write_jsonl
from tests.helpers import minimal_dpo, minimal_sft

CORPUS = Path(__file__).parent / "corpus"
CASES = yaml.safe_load((CORPUS / "expected.yaml").read_text())


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_llama):
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "a-file").write_text("not a folder")
    (root / "a-folder").mkdir()
    os.mkfifo(root / "a-fifo")  # reading it would block: the data reader must not open it
    return {
        "MODEL": str(tiny_llama),
        "MODEL_NO_TEMPLATE": str(
            build_model(root / "no-template", tokenizer_kwargs={"chat_template": False})
        ),
        "DATA": str(write_jsonl(root / "good.jsonl", synthetic_chats(8))),
        "PREFS": str(write_jsonl(root / "prefs.jsonl", synthetic_preferences(8))),
        "DIR": str(root),
        # Reward files and rows the method-specific cases read (not cases themselves).
        "SUPPORT": str(CORPUS / "support"),
        # A model whose tokenizer carries Llama 3's original template (no tools, no reasoning).
        "MODEL_LLAMA3": str(_with_template(tiny_llama, root / "llama3", "llama3")),
    }


def _with_template(model, folder, name):
    """A copy of ``model`` whose tokenizer carries TRL's original template ``name``."""
    from tests.data import template_corpus

    shutil.copytree(model, folder)
    template = template_corpus.trl_templates()[name]
    template_corpus.template_tokenizer(template, str(folder)).save_pretrained(folder)
    return folder


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 90
    assert sum(1 for c in CASES.values() if c.get("data_file")) >= 10


def _write_case(name, places, tmp_path):
    """The case's config with the fixture's paths filled in (a data case gets a good config)."""
    case = CASES[name]
    values = {**places, "OUT": str(tmp_path / "out")}
    if case.get("data_file"):
        maker = minimal_sft if case["method"] == "sft" else minimal_dpo
        config = maker(values["MODEL"], CORPUS / name)
        config["training_args"] = {"max_steps": 1, "output_dir": values["OUT"]}
        text = yaml.safe_dump(config)
    else:
        text = (CORPUS / name).read_text()
        for key, value in values.items():
            text = text.replace("${" + key + "}", value)
    path = tmp_path / name if not case.get("data_file") else tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_a_located_user_error(name, places, tmp_path, capsys):
    case = CASES[name]
    path = _write_case(name, places, tmp_path)
    code = main([case["method"], str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    for expected in case["expect"]:
        assert expected in err, err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "checkpoint-final")


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_fails_on_the_same_bad_inputs(name, places, tmp_path, capsys):
    """`validate` builds the run's plan, so every input a run refuses, validate refuses too,
    with the same message, and without creating the output folder."""
    case = CASES[name]
    path = _write_case(name, places, tmp_path)
    code = main(["validate", str(path), "--method", case["method"]])
    err = capsys.readouterr().err
    assert code == 2, err
    for expected in case["expect"]:
        assert expected in err, err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")
