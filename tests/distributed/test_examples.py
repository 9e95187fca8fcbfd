"""The example launch configs are valid for their tools, and DeepSpeed batch fields are ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetuning.config.loading import load_config_dict
from finetuning.train.arguments import trainer_kwargs
from finetuning.train.batch import resolve
from tests.helpers import minimal_sft

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXPECTED = {
    "ddp.yaml": ("MULTI_GPU", None),
    "deepspeed_zero1.yaml": ("DEEPSPEED", 1),
    "deepspeed_zero3.yaml": ("DEEPSPEED", 3),
    "fsdp2.yaml": ("FSDP", None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_example_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(EXAMPLES / "accelerate" / name)
    kind, stage = EXPECTED[name]
    assert config.distributed_type.value == kind
    if stage is not None:
        assert config.deepspeed_config["zero_stage"] == stage
    if name == "deepspeed_zero3.yaml":
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
    if name == "fsdp2.yaml":
        assert config.fsdp_config["fsdp_version"] == 2


@pytest.mark.parametrize("inline", [True, False], ids=["inline-dict", "json-path"])
def test_deepspeed_batch_fields_come_from_batchsize_conf(inline, tmp_path):
    path = EXAMPLES / "deepspeed" / "zero3.json"
    deepspeed = json.loads(path.read_text()) if inline else str(path)
    raw = minimal_sft(
        training_args={"deepspeed": deepspeed},
        batchsize_conf={"total_train_batch_size": 64, "max_per_device_train_batch_size": 4},
    )
    config = load_config_dict(raw, "sft").config
    kwargs = trainer_kwargs(config, resolve(config, world_size=8), tmp_path, False)
    ds = kwargs["deepspeed"]
    assert (
        ds["train_micro_batch_size_per_gpu"],
        ds["gradient_accumulation_steps"],
        ds["train_batch_size"],
    ) == (4, 2, 64)
    assert ds["zero_optimization"]["stage"] == 3


def test_kubernetes_job_runs_the_documented_command():
    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "job.yaml").read_text()))
    job = next(d for d in documents if d["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["torchrun"]
    assert container["args"][-4:] == ["-m", "finetuning", "sft", "/config/config.yaml"]
    assert {"CHECKPOINTS_PATH", "LOGS_PATH"} <= {e["name"] for e in container["env"]}
