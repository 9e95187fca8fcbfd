"""Generated docs and schema: in sync with the models; the field snapshot in sync with the libraries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetuning.config.hf_fields import SNAPSHOT_PATH, build_snapshot
from finetuning.config.reference import json_schema, markdown_reference
from tests.config.test_models import REFERENCE_DEFAULTS, REFERENCE_FIELDS

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("method", ["sft", "dpo"])
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


@pytest.mark.parametrize("method", ["sft", "dpo"])
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
