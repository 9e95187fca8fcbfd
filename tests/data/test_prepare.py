"""Preparation end to end: the cache's hit/miss rules, mixing and splitting, the preflight report."""

from __future__ import annotations

import json

import pytest

from finetuning.cli import main
from finetuning.config.loading import load_config_dict
from finetuning.data.preflight import encode_settings, preflight
from finetuning.data.prepare import prepare_data
from finetuning.data.tokenizer import load_tokenizer, setup_tokenizer
from finetuning.errors import UserError
from finetuning.testing import synthetic_chats, write_jsonl
from tests.helpers import minimal_sft, run_main, write_config


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FINETUNING_CACHE_DIR", str(folder))
    return folder


def _loaded(model, data_path, **changes):
    raw = minimal_sft(model, data_path)
    for key, value in changes.items():
        section, field = key.split("__")
        raw[section][field] = value
    return load_config_dict(raw, "sft")


def _prepare(loaded):
    config = loaded.config
    setup = setup_tokenizer(config, load_tokenizer(config))
    return prepare_data(config.data_conf, setup.tokenizer, encode_settings(config), "sft", 1)


def test_second_run_hits_the_cache(tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(50))
    first = _prepare(_loaded(tiny_llama, data))
    second = _prepare(_loaded(tiny_llama, data))
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.cache_path == second.cache_path
    assert first.train.store.input_ids.tolist() == second.train.store.input_ids.tolist()


@pytest.mark.parametrize(
    "change",
    [
        {"sft_args__max_seq_length": 40},
        {"sft_args__train_on_completions_only": True},
        {"sft_args__length_handling": "truncate"},
        {"data_conf__chat_template_name": "poro"},
    ],
)
def test_a_changed_setting_misses_the_cache(change, tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(50))
    base = _prepare(_loaded(tiny_llama, data))
    changed = _prepare(_loaded(tiny_llama, data, **change))
    assert not changed.cache_hit
    assert changed.cache_path != base.cache_path


def test_changed_data_misses_the_cache(tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(50))
    base = _prepare(_loaded(tiny_llama, data))
    rows = synthetic_chats(50)
    rows[10]["messages"][-1]["content"] += " changed"
    write_jsonl(data, rows)
    changed = _prepare(_loaded(tiny_llama, data))
    assert not changed.cache_hit and changed.cache_path != base.cache_path


def test_changed_tokenizer_misses_the_cache(tiny_llama, tmp_path, cache):
    import shutil

    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(50))
    base = _prepare(_loaded(tiny_llama, data))
    other = tmp_path / "model2"
    shutil.copytree(tiny_llama, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ messages[0]['content'] }}"
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    (other / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    changed = _prepare(_loaded(other, data, data_conf__chat_template_name="keep-original"))
    again = _prepare(_loaded(tiny_llama, data, data_conf__chat_template_name="keep-original"))
    assert changed.cache_path != again.cache_path
    assert base.cache_path != again.cache_path


def test_weighted_mix_and_auto_split(tiny_llama, tmp_path, cache):
    a = write_jsonl(tmp_path / "a.jsonl", synthetic_chats(30, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", synthetic_chats(10, seed=2))
    raw = minimal_sft(tiny_llama, a)
    raw["data_conf"]["training_data"] = {
        "type": "PRECOMPUTE_WEIGHTED_MIX",
        "datasets": [{"path": str(a)}, {"path": str(b)}],
    }
    raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.1}
    prepared = _prepare(load_config_dict(raw, "sft"))
    assert prepared.mixed_rows == 60  # round robin: 30 rounds x 2 sources
    assert len(prepared.valid) == 6 and len(prepared.train) == 54


def test_preflight_report(tiny_llama, tmp_path, cache):
    rows = synthetic_chats(40)
    rows[0]["messages"][-1]["content"] = "word " * 200  # too long
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    loaded = _loaded(tiny_llama, data, sft_args__train_on_completions_only=True)
    report = preflight(loaded)
    text = report.format()
    assert "training rows: 39" in text
    assert "1 rows longer than 128 tokens were dropped" in text
    assert "token lengths: min" in text and "p95" in text
    assert "of them are trained on" in text
    assert "end-of-turn marker '<|im_end|>' trained: yes" in text
    assert "tokens added to the vocabulary: <|im_start|>, <|im_end|>" in text
    assert not report.fatal
    shown = report.show_example(0)
    assert "⟦<|im_start|>assistant\n" in shown and "<|im_end|>⟧" in shown


def test_preflight_is_fatal_when_nothing_is_left(tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(5))
    loaded = _loaded(tiny_llama, data, sft_args__max_seq_length=4)
    with pytest.raises(UserError, match="no training rows are left after length handling"):
        preflight(loaded)


def test_validate_cli_prints_the_report_and_exits_2_when_fatal(tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(30))
    raw = minimal_sft(tiny_llama, data)
    raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.2}
    path = write_config(tmp_path / "c.yaml", raw)
    result = run_main("validate", path, "--show-example", "1")
    assert result.returncode == 0, result.stderr
    assert "training rows: 24; validation rows: 6" in result.stderr
    assert "example 1 (trained tokens between" in result.stdout
    raw["sft_args"]["max_seq_length"] = 3
    result = run_main("validate", write_config(tmp_path / "c2.yaml", raw))
    assert result.returncode == 2
    assert "no training rows are left" in result.stderr


def test_evaluation_that_cannot_run_is_a_validate_warning(tiny_llama, tmp_path, cache, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(10))
    long_rows = synthetic_chats(3, seed=4)
    for row in long_rows:
        row["messages"][-1]["content"] = "word " * 200  # every validation row is too long
    valid = write_jsonl(tmp_path / "v.jsonl", long_rows)
    raw = minimal_sft(tiny_llama, data, training_args={"eval_strategy": "steps"})
    raw["data_conf"]["validation_data"] = {
        "type": "CONCATENATION",
        "datasets": [{"path": str(valid)}],
    }
    assert main(["validate", str(write_config(tmp_path / "c.yaml", raw))]) == 0
    err = capsys.readouterr().err
    assert "WARNING: training_args.eval_strategy is 'steps' but no validation rows are left" in err


def test_validation_data_without_evaluation_is_a_warning(tiny_llama, tmp_path, cache):
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_chats(20))
    raw = minimal_sft(tiny_llama, data)
    raw["data_conf"]["validation_data"] = {"type": "AUTO_SPLIT", "ratio": 0.2}
    warnings = preflight(load_config_dict(raw, "sft")).warnings
    assert any("validation data is never evaluated (AUTO_SPLIT still holds" in w for w in warnings)
    raw["training_args"]["eval_strategy"] = "epoch"
    warnings = preflight(load_config_dict(raw, "sft")).warnings
    assert not any("evaluat" in w for w in warnings), warnings
