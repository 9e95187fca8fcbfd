"""The ecosystem's dataset formats and datasets by name train through the CLI with only `path`.

One short SFT run reads six datasets at once (our messages, ShareGPT, Alpaca, TRL's string and
conversational prompt/completion, and a local dataset repository folder with a split slice); the
other methods' formats, `columns:` and a Hub id from a pre-filled cache run in the full suite.
"""

from __future__ import annotations

import pytest

from finetuning.testing import synthetic_arithmetic, synthetic_chats, synthetic_documents
from tests.data import formats_data as fd
from tests.helpers import MINIMAL, losses, run_main, write_config

pytestmark = pytest.mark.slow


def _run(method, tmp_path, datasets, **training):
    """Train ``method`` on ``datasets`` (dataset definitions) for a few steps; the preflight."""
    out = tmp_path / "out"
    config = MINIMAL[method]()
    config["run_conf"]["model"] = str(training.pop("model"))
    config["data_conf"]["training_data"] = {"type": "CONCATENATION", "datasets": datasets}
    config["training_args"].update(
        output_dir=str(out), max_steps=2, logging_steps=1, save_strategy="no", **training
    )
    path = write_config(tmp_path / f"{method}.yaml", config)
    result = run_main(method, path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "checkpoint-final").is_dir()
    assert len(losses(out)) == 2
    return (out / "data_preflight.txt").read_text()


def _formats(preflight: str) -> list[str]:
    return [
        line.split("format ")[1].split(",")[0]
        for line in preflight.splitlines()
        if "; format " in line
    ]


def test_sft_reads_every_chat_format_and_a_dataset_folder(tmp_path, tiny_llama, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    repo = fd.dataset_repository(tmp_path / "repo", {"default": {"train": fd.sharegpt(10, seed=5)}})
    files = [
        fd.write_rows(tmp_path / "ours.jsonl", synthetic_chats(4, seed=1)),
        fd.write_rows(tmp_path / "sharegpt.jsonl", fd.sharegpt(4, seed=2)),
        fd.write_rows(tmp_path / "alpaca.jsonl", fd.alpaca(4, seed=3)),
        fd.write_rows(tmp_path / "trl.jsonl", fd.prompt_completion(4, seed=4)),
        fd.write_rows(
            tmp_path / "trl.parquet", fd.prompt_completion(4, seed=6, conversational=True)
        ),
    ]
    datasets_ = [{"path": str(f)} for f in files] + [{"path": str(repo), "split": "train[:40%]"}]
    preflight = _run("sft", tmp_path, datasets_, model=tiny_llama)
    assert _formats(preflight) == [
        "messages", "sharegpt", "alpaca", "prompt-completion", "prompt-completion", "sharegpt",
    ]  # fmt: skip
    assert f"datasets[5].path: 4 rows ({repo}; format sharegpt, detected)" in preflight
    assert "training rows after mixing: 24" in preflight


@pytest.mark.full
def test_dpo_reads_explicit_and_implicit_prompt_preferences(tmp_path, tiny_llama):
    files = [
        fd.write_rows(tmp_path / "explicit.jsonl", fd.explicit_preferences(4, seed=1)),
        fd.write_rows(tmp_path / "ultrafeedback.parquet", fd.implicit_preferences(4, seed=2)),
    ]
    preflight = _run("dpo", tmp_path, [{"path": str(f)} for f in files], model=tiny_llama)
    assert _formats(preflight) == ["prompt-chosen-rejected", "chosen-rejected"]
    assert "training rows: 8" in preflight


@pytest.mark.full
def test_kto_reads_trl_unpaired_and_preference_rows(tmp_path, tiny_llama):
    files = [
        fd.write_rows(tmp_path / "kto.jsonl", fd.kto(6, seed=1)),
        fd.write_rows(tmp_path / "pref.jsonl", fd.explicit_preferences(3, seed=2)),
    ]
    preflight = _run("kto", tmp_path, [{"path": str(f)} for f in files], model=tiny_llama)
    assert _formats(preflight) == ["prompt-completion-label", "prompt-chosen-rejected"]
    assert "unpaired into one desirable and one undesirable example: 3" in preflight


@pytest.mark.full
def test_grpo_reads_trl_prompt_rows(tmp_path, tiny_llama):
    rows = [{"prompt": r["prompt_messages"][0]["content"], "answer": r["answer"]}
            for r in synthetic_arithmetic(4)]  # fmt: skip
    path = fd.write_rows(tmp_path / "prompts.jsonl", rows)
    preflight = _run("grpo", tmp_path, [{"path": str(path)}], model=tiny_llama)
    assert _formats(preflight) == ["prompt"]
    assert "row keys passed to the reward functions: answer" in preflight


@pytest.mark.full
def test_pretrain_renames_a_content_column(tmp_path, tiny_llama):
    rows = [{"content": r["text"]} for r in synthetic_documents(6, seed=1)]
    path = fd.write_rows(tmp_path / "docs.parquet", rows)
    datasets_ = [{"path": str(path), "columns": {"text": "content"}}]
    preflight = _run("pretrain", tmp_path, datasets_, model=tiny_llama)
    assert _formats(preflight) == ["text"]


@pytest.mark.full
def test_a_hub_id_trains_from_the_cache_offline_and_an_uncached_one_exits_2(
    tmp_path, tiny_llama, monkeypatch
):
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "datasets"
    cache.mkdir(parents=True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = fd.dataset_repository(tmp_path / "alpaca-tiny", {"main": {"train": fd.alpaca(8)}})
    fd.fill_hub_cache(repo, "org/alpaca-tiny", cache)
    preflight = _run(
        "sft", tmp_path, [{"path": "org/alpaca-tiny", "name": "main"}], model=tiny_llama
    )
    assert "datasets[0].path: 8 rows (org/alpaca-tiny; format alpaca, detected)" in preflight

    config = MINIMAL["sft"](tiny_llama, "org/never-downloaded")
    config["training_args"]["output_dir"] = str(tmp_path / "out2")
    result = run_main("sft", write_config(tmp_path / "uncached.yaml", config), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cannot load the dataset 'org/never-downloaded'" in result.stderr
    assert "the network is off" in result.stderr
