"""The generate tool's inputs fail as located user errors, before any model loads."""

from __future__ import annotations

import pytest

from finetuning.data.encode import needs_special_prefix
from finetuning.errors import UserError
from finetuning.tools.generate import _read_jsonl, generate_from_config


def test_prompt_rows_get_the_located_errors_of_training_data(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"messages": []}\n{"messages": [\n[1, 2]\n')
    with pytest.raises(UserError) as caught:
        _read_jsonl(path)
    text = caught.value.format()
    assert f"{path} has malformed rows:" in text
    assert f"{path}:2: invalid JSON" in text
    assert f"{path}:3: a row must be a JSON object, got list" in text
    with pytest.raises(UserError, match="--input: data file not found"):
        _read_jsonl(tmp_path / "missing.jsonl")


def test_a_bad_generate_config_names_key_and_line(tmp_path):
    path = tmp_path / "generate.yaml"
    path.write_text("model_conf:\n  model: /m\n  adaptr: /a\nprompt_conf:\n  type: open-inpt\n")
    with pytest.raises(UserError) as caught:
        generate_from_config(path, tmp_path / "out.yaml")
    text = caught.value.format()
    assert f"{path}:3: model_conf.adaptr: Additional properties are not allowed" in text
    assert "did you mean `adapter`?" in text
    assert "'open-inpt' is not allowed" in text
    assert "pydantic" not in text.lower()


def test_one_bos_rule(tiny_tokenizer):
    bos = tiny_tokenizer.bos_token
    assert bos
    assert needs_special_prefix(tiny_tokenizer, "hello")
    assert not needs_special_prefix(tiny_tokenizer, bos + "hello")
