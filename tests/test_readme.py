"""The README's commands: the test command runs the fast tier, CI runs exactly the full suite."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_install_and_test_commands():
    install, tests, full = _commands()[:3]
    assert "pip install torch==2.13.0" in install
    assert "finetuning init example && finetuning sft example/sft.yaml" in install
    assert tests.endswith("&& pytest")
    assert full == f'{tests} -m ""'  # the same command, every tier


def test_plain_pytest_runs_the_fast_tier_and_both_markers_are_documented():
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    addopts = pytest_options["ini_options"]["addopts"]
    assert "-m 'not full'" in addopts  # a later `-m ""` on the command line replaces it
    markers = {m.split(":")[0] for m in pytest_options["ini_options"]["markers"]}
    assert {"slow", "full"} <= markers
    readme = (ROOT / "README.md").read_text()
    assert "@pytest.mark.full" in readme and "@pytest.mark.slow" in readme


def test_ci_runs_exactly_the_readme_full_suite_command():
    full = _commands()[2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == full
