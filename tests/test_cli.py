"""The command line: exit codes, messages without tracebacks, light config-only commands."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.helpers import minimal_sft, run_cli, run_main, write_config


def test_broken_config_exits_2_with_the_key_and_no_traceback(tmp_path):
    raw = minimal_sft(training_args={"learnig_rate": 1e-3})
    path = write_config(tmp_path / "c.yaml", raw)
    result = run_cli("sft", path)
    assert result.returncode == 2
    assert "training_args.learnig_rate" in result.stderr
    assert "did you mean `learning_rate`?" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path):
    result = run_cli("validate", tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "config file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_print_config_fills_every_default(tmp_path):
    path = write_config(tmp_path / "c.yaml", minimal_sft(training_args={"warmup_ratio": 0.1}))
    result = run_main("validate", path, "--config-only", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["training_args"]["warmup_steps"] == 0.1
    assert "warmup_ratio" not in printed["training_args"]
    assert printed["training_args"]["lr_scheduler_type"] == "linear"  # a library default
    assert printed["run_conf"]["model_args"]["revision"] == "main"
    assert printed["sft_args"]["max_seq_length"] == 128
    assert printed["overrides"] == {"lr_multiplier": 1.0, "lr_batch_size_scaling": "none"}
    assert "warmup_ratio: 0.1 mapped to warmup_steps" in result.stderr
    # The printed config is itself a valid config.
    again = write_config(tmp_path / "again.yaml", printed)
    assert run_main("validate", again, "--config-only").returncode == 0


@pytest.mark.parametrize("command", ["schema", "docs"])
def test_config_only_commands_do_not_import_torch(command):
    code = (
        "import sys, io, contextlib\n"
        "from finetuning.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['{command}', 'sft']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("sub", ["sft", "dpo", "validate", "schema", "docs", "init"])
def test_every_subcommand_has_help(sub):
    result = run_cli(sub, "--help")
    assert result.returncode == 0
    assert "usage: finetuning" in result.stdout


def test_global_options_before_the_subcommand(tmp_path):
    path = write_config(tmp_path / "c.yaml", minimal_sft())
    result = run_main(
        "--logging-level", "INFO", "--num-preprocess-workers", "2", "--mlflow-server-uri",
        str(tmp_path / "ml"), "--experiment-name", "x", "--hf-mlflow-log-artifacts", "False",
        "validate", path, "--config-only",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_unexpected_errors_exit_1():
    code = (
        "from finetuning import cli\n"
        "cli._dispatch = lambda args: 1 / 0\n"
        "raise SystemExit(cli.main(['schema', 'sft']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "ZeroDivisionError" in result.stderr


def test_init_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "something").write_text("x")
    result = run_main("init", tmp_path)
    assert result.returncode == 2
    assert "exists and is not empty" in result.stderr


def test_init_writes_a_runnable_example(tmp_path):
    result = run_main("init", tmp_path / "example")
    assert result.returncode == 0, result.stderr
    assert f"finetuning sft {tmp_path / 'example' / 'sft.yaml'}" in result.stdout
    assert (tmp_path / "example" / "model" / "model.safetensors").is_file()
    assert len((tmp_path / "example" / "data" / "train.jsonl").read_text().splitlines()) == 2000
    check = run_main("validate", tmp_path / "example" / "sft.yaml")
    assert check.returncode == 0, check.stderr
    assert "end-of-turn marker '<|im_end|>' trained: yes" in check.stderr
