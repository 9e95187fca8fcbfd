"""Datasets by name: local dataset repositories and Hub ids from a pre-filled cache, offline."""

from __future__ import annotations

import pytest

from finetuning.config.data import DatasetDefinition
from finetuning.data import hub
from finetuning.data.prepare import cache_key
from finetuning.data.rows import read_dataset
from finetuning.errors import UserError
from tests.data import formats_data

KEY = "data_conf.training_data.datasets[0].path"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """A private, empty Hugging Face datasets cache, offline (never ~/.cache)."""
    import datasets
    import huggingface_hub.constants

    cache = tmp_path / "hf" / "datasets"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def repo(tmp_path):
    return formats_data.dataset_repository(
        tmp_path / "tiny-chats",
        {
            "sharegpt": {
                "train": formats_data.sharegpt(10, seed=0),
                "test": formats_data.sharegpt(4, seed=1),
            },
            "alpaca": {"train": formats_data.alpaca(6, seed=2)},
        },
    )


def test_a_dataset_repository_folder_is_read_by_split_and_subset(repo, hf_cache):
    assert hub.is_by_name(str(repo))
    read = read_dataset(DatasetDefinition(path=str(repo)), "sft", KEY)
    assert read.format == "sharegpt" and len(read.rows) == 10
    assert read.rows[0]["_where"] == f"{repo}[train] row 0"
    assert read.rows[0]["messages"][0]["role"] == "user"
    test = read_dataset(DatasetDefinition(path=str(repo), split="test"), "sft", KEY)
    assert len(test.rows) == 4
    sliced = read_dataset(DatasetDefinition(path=str(repo), split="train[:30%]"), "sft", KEY)
    assert len(sliced.rows) == 3
    subset = read_dataset(DatasetDefinition(path=str(repo), name="alpaca"), "sft", KEY)
    assert subset.format == "alpaca" and len(subset.rows) == 6
    assert len({read.fingerprint, test.fingerprint, sliced.fingerprint, subset.fingerprint}) == 4


def test_data_files_pick_files_of_a_folder(repo, hf_cache):
    dataset = DatasetDefinition(path=str(repo), data_files="data/alpaca/*.parquet")
    read = read_dataset(dataset, "sft", KEY)
    assert read.format == "alpaca" and len(read.rows) == 6


def test_a_missing_split_or_subset_is_a_located_error(repo, hf_cache):
    with pytest.raises(UserError) as info:
        read_dataset(DatasetDefinition(path=str(repo), split="validation"), "sft", KEY)
    assert info.value.format().startswith(f"{KEY}: the dataset {str(repo)!r} has no such split")
    with pytest.raises(UserError, match="no such subset"):
        read_dataset(DatasetDefinition(path=str(repo), name="nope"), "sft", KEY)


def test_a_hub_id_loads_from_the_prefilled_cache_offline(repo, hf_cache):
    formats_data.fill_hub_cache(repo, "org/tiny-chats", hf_cache)
    assert hub.is_by_name("org/tiny-chats")
    read = read_dataset(DatasetDefinition(path="org/tiny-chats", name="sharegpt"), "sft", KEY)
    assert read.format == "sharegpt" and len(read.rows) == 10
    assert read.rows[3]["_where"] == "org/tiny-chats (sharegpt)[train] row 3"
    again = read_dataset(DatasetDefinition(path="org/tiny-chats", name="sharegpt"), "sft", KEY)
    assert again.fingerprint == read.fingerprint  # a second read hits the same cache entry


def test_an_uncached_id_with_the_network_off_says_so(hf_cache):
    with pytest.raises(UserError) as info:
        read_dataset(DatasetDefinition(path="org/not-cached"), "sft", KEY)
    text = info.value.format()
    assert text.startswith(f"{KEY}: cannot load the dataset 'org/not-cached'")
    assert "the network is off" in text and "not in the Hugging Face cache" in text


def test_an_unknown_id_online_says_it_is_unknown(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    def not_found(path, **kwargs):  # what the Hub answers for an id it does not have
        raise DatasetNotFoundError(
            f"Dataset '{path}' doesn't exist on the Hub or cannot be accessed."
        )

    monkeypatch.setattr(datasets, "load_dataset", not_found)
    with pytest.raises(UserError) as info:
        read_dataset(DatasetDefinition(path="org/typo"), "sft", KEY)
    text = info.value.format()
    assert "the dataset 'org/typo' is unknown" in text and "network is off" not in text


def test_what_is_read_by_name_and_what_is_a_file(tmp_path, repo):
    (tmp_path / "empty").mkdir()
    assert not hub.is_by_name(str(tmp_path / "empty"))  # refused as before: not a dataset
    assert not hub.is_by_name("missing.jsonl") and not hub.is_by_name("./org/name")
    assert hub.is_by_name("org/name") and hub.is_by_name("squad")
    from datasets import Dataset

    Dataset.from_list(formats_data.alpaca(2)).save_to_disk(str(tmp_path / "saved"))
    assert not hub.is_by_name(str(tmp_path / "saved"))


def test_the_cache_key_follows_the_fingerprint_and_the_reading(tiny_tokenizer):
    from finetuning.config.data import ChatTemplateName
    from finetuning.data.encode import EncodeSettings

    settings = EncodeSettings(ChatTemplateName.CHAT_ML, 64)
    one = cache_key(["fp-1"], tiny_tokenizer, settings, "sft", [["sharegpt", {}]])
    assert one == cache_key(["fp-1"], tiny_tokenizer, settings, "sft", [["sharegpt", {}]])
    assert one != cache_key(["fp-2"], tiny_tokenizer, settings, "sft", [["sharegpt", {}]])
    assert one != cache_key(["fp-1"], tiny_tokenizer, settings, "sft", [["sharegpt", {"a": "b"}]])
