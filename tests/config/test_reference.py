"""Generated docs and schema: in sync with the models; the field snapshot in sync with the libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetuning.config.hf_fields import SNAPSHOT_PATH, build_snapshot
from finetuning.config.methods import METHODS
from finetuning.config.reference import json_schema, markdown_reference
from tests.config.test_models import REFERENCE_DEFAULTS, REFERENCE_FIELDS

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("method", list(METHODS))
def test_committed_reference_matches_the_models(method):
    committed = (DOCS / f"config-{method}.md").read_text()
    assert committed == markdown_reference(method), (
        f"docs/config-{method}.md is stale: run `finetuning docs {method} > docs/config-{method}.md`"
    )


def test_sft_reference_lists_every_property_and_default():
    text = markdown_reference("sft")
    for model, names in REFERENCE_FIELDS.items():
        for name in names.split():
            assert f"| `{name}` |" in text, (model.__name__, name)
    for (model, name), default in REFERENCE_DEFAULTS.items():
        section = (
            text.split(f"### {model.__name__}\n", 1)[-1]
            if model.__name__ != "SFTExperimentConfig"
            else text
        )
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{json.dumps(default)}`" in row, row


def test_reference_lists_legacy_fields():
    text = markdown_reference("dpo")
    assert "| `warmup_ratio` | mapped" in text
    assert "| `rpo_alpha` | mapped" in text


@pytest.mark.parametrize("method", list(METHODS))
def test_schema_is_json_schema(method):
    schema = json_schema(method)
    assert schema["$schema"].endswith("2020-12/schema")
    assert {"data_conf", "training_args", "batchsize_conf", "peft_conf", "run_conf"} <= set(
        schema["properties"]
    )
    assert schema["additionalProperties"] is False


def test_training_args_snapshot_matches_installed_libraries():
    committed = json.loads(SNAPSHOT_PATH.read_text())
    assert committed == json.loads(json.dumps(build_snapshot())), (
        "the installed transformers/TRL changed: run `python -m finetuning.config.hf_fields`"
    )


def _validator(method):
    import jsonschema

    schema = json_schema(method)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(method, config):
    return [(list(e.absolute_path), e.message) for e in _validator(method).iter_errors(config)]


@pytest.mark.parametrize("method", list(METHODS))
def test_schema_validator_rejects_a_misspelt_training_arg(method):
    config = _minimal(method)
    assert _errors(method, config) == []
    config["training_args"]["learnig_rate"] = 1e-3
    errors = _errors(method, config)
    assert len(errors) == 1 and errors[0][0] == ["training_args"], errors
    assert "'learnig_rate' was unexpected" in errors[0][1]


def test_schema_training_args_have_types_defaults_choices_and_legacy_names():
    sft = json_schema("sft")["properties"]["training_args"]["properties"]
    assert sft["learning_rate"] == {"type": "number", "default": 5e-05}
    assert "per_device_train_batch_size" not in sft  # batchsize_conf owns it
    assert "linear" in sft["lr_scheduler_type"]["enum"]
    assert sft["warmup_ratio"]["deprecated"] is True
    dpo = json_schema("dpo")["properties"]["training_args"]["properties"]
    assert dpo["truncation_mode"]["default"] == "keep_end"  # the engine's default
    assert dpo["beta"]["type"] == "number" and "max_prompt_length" in dpo
    wrong = {"learning_rate": "fast"}
    assert _errors("sft", {**_minimal("sft"), "training_args": wrong})


def _minimal(method):
    from tests.helpers import MINIMAL

    return MINIMAL[method]()


def test_schema_of_the_preference_methods_has_their_defaults_and_choices():
    kto = json_schema("kto")["properties"]["training_args"]["properties"]
    assert kto["desirable_weight"] == {"type": "number", "default": 1.0}
    assert set(kto["loss_type"]["enum"]) == {"kto", "apo_zero_unpaired"}
    assert kto["max_prompt_length"]["default"] == 512  # the engine's, not in KTOConfig
    simpo = json_schema("simpo")["properties"]["training_args"]["properties"]
    assert simpo["loss_type"]["default"] == "simpo" and simpo["cpo_alpha"]["default"] == 0.0
    assert "simpo_gamma" in simpo and "rpo_alpha" not in simpo  # DPO-only legacy names
    assert "log_odds" not in json.dumps(json_schema("orpo"))  # no invented fields
    assert json_schema("orpo")["properties"]["method"]["const"] == "orpo"


def test_reference_configs_and_init_examples_validate_against_the_schema(tmp_path, monkeypatch):
    import os

    import yaml

    from finetuning.tools import init
    from tests.conftest import REFERENCE_CONFIGS

    for key in ("MODEL_DIR", "DATA_DIR", "MLFLOW_URI", "OUTPUT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / key.lower()))
    paths = sorted(REFERENCE_CONFIGS.glob("*.yaml"))
    assert len(paths) == 8
    configs = [yaml.safe_load(os.path.expandvars(p.read_text())) for p in paths]
    assert sorted(init.CONFIGS) == sorted(f"{m}.yaml" for m in METHODS)  # one per method
    configs += [yaml.safe_load(text.format(dir=tmp_path)) for text in init.CONFIGS.values()]
    for config in configs:
        method = config.get("method", "sft")
        assert _errors(method, config) == [], config
