"""Path fields: ``~`` expanded once at load, ``$VAR`` not expanded (and said so), folder names."""

from __future__ import annotations

import pytest
import yaml

from finetuning.config.loading import load_config, load_config_dict
from finetuning.config.paths import PATH_FIELDS
from finetuning.errors import UserError
from finetuning.train.arguments import output_dirs
from tests.helpers import minimal_dpo, minimal_sft


def _with_home_paths() -> dict:
    return minimal_sft(
        model="~/models/m",
        data="~/data/train.jsonl",
        data_conf={
            "training_data": {"type": "CONCATENATION", "datasets": [{"path": "~/d/a.jsonl"}]},
            "validation_data": {"type": "CONCATENATION", "datasets": [{"path": "~/d/v.jsonl"}]},
            "chat_template_name": "chat-ml",
        },
        training_args={
            "output_dir": "~/runs/t",
            "logging_dir": "~/logs/t",
            "deepspeed": "~/ds.json",
        },
        run_conf={
            "model": "~/models/m",
            "tokenizer": "~/tok",
            "resume_from_checkpoint": "~/runs/t/checkpoint-2",
            "model_args": {"cache_dir": "~/hf", "offload_folder": "~/off"},
        },
        peft_conf={"peft_type": "PRETRAINED_PEFT", "name_or_path": "~/adapter"},
        tracking={"mlflow_server_uri": "~/mlruns", "experiment_name": "e"},
    )


def test_every_path_field_has_its_home_expanded_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    raw = _with_home_paths()
    config = load_config_dict(raw, "sft").config.model_dump()
    for field in PATH_FIELDS:
        node = config
        for part in field:
            node = node[0] if part == "*" else node[part]
        assert node.startswith(str(tmp_path) + "/"), (field, node)
    assert raw["training_args"]["output_dir"] == "~/runs/t"  # the caller's dict is not changed
    out, logs = output_dirs(load_config_dict(raw, "sft").config)
    assert out == tmp_path / "runs" / "t" and logs == tmp_path / "logs" / "t"


def test_a_relative_path_stays_relative_to_the_current_directory():
    config = load_config_dict(minimal_sft(data="data/train.jsonl"), "sft").config
    assert config.data_conf.training_data.datasets[0].path == "data/train.jsonl"


@pytest.mark.parametrize("value", ["${MODEL_DIR}/tiny", "$MODEL_DIR/tiny"])
def test_an_unexpanded_variable_in_a_path_is_named(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal_sft(model=value), sort_keys=False))
    with pytest.raises(UserError) as info:
        load_config(path, "sft")
    text = info.value.format()
    assert f"run_conf.model: path does not exist: '{value}'" in text
    assert "environment variables such as $" in text and "are not expanded" in text
    assert "c.yaml:" in text  # located at its line


def test_an_existing_path_with_a_dollar_is_fine(tmp_path):
    data = tmp_path / "a$b.jsonl"
    data.write_text("")
    config = load_config_dict(minimal_dpo(data=data), "dpo").config
    assert config.data_conf.training_data.datasets[0].path == str(data)


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "~x", "a\\b"])
@pytest.mark.parametrize("field", ["final_checkpoint_name", "save_name_if_new_basemodel"])
def test_folder_names_must_be_plain(field, name):
    config = minimal_sft()
    section = "run_conf" if field == "final_checkpoint_name" else "sft_args"
    config[section][field] = name
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    assert (
        f"{section}.{field}: must be a plain folder name inside output_dir" in info.value.format()
    )


def test_plain_folder_names_are_accepted():
    config = minimal_sft()
    config["run_conf"]["final_checkpoint_name"] = "final.v2"
    assert load_config_dict(config, "sft").config.run_conf.final_checkpoint_name == "final.v2"


@pytest.mark.parametrize("key", ["output_dir", "logging_dir"])
def test_an_output_folder_that_is_a_file_is_an_error_at_load(tmp_path, key):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError) as info:
        load_config_dict(minimal_sft(training_args={key: str(tmp_path / "f")}), "sft")
    assert f"training_args.{key}: cannot write into" in info.value.format()
    assert "it is a file, not a folder" in info.value.format()


def test_a_hub_dataset_id_is_not_a_missing_file_beside_another_path_problem(tmp_path):
    """Path problems are reported with every missing data file; a Hub id is no file."""
    (tmp_path / "f").write_text("x")
    config = minimal_sft(training_args={"output_dir": str(tmp_path / "f")})
    config["data_conf"]["training_data"]["datasets"] = [
        {"path": "org/chats"},
        {"path": str(tmp_path / "gone.jsonl")},
    ]
    with pytest.raises(UserError) as info:
        load_config_dict(config, "sft")
    text = info.value.format()
    assert "training_args.output_dir: cannot write into" in text
    assert f"data file not found: {tmp_path / 'gone.jsonl'}" in text
    assert "org/chats" not in text


def test_a_logging_dir_from_the_environment_that_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("LOGS_PATH", str(tmp_path / "f"))
    config = load_config_dict(minimal_sft(), "sft").config
    with pytest.raises(UserError, match="logging_dir: cannot write into"):
        output_dirs(config)
