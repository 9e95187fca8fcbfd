"""The README's two commands: CI runs exactly the test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_starts_with_install_and_test_commands():
    install, tests = _commands()[:2]
    assert "pip install torch==2.13.0" in install
    assert "finetuning init example && finetuning sft example/sft.yaml" in install
    assert "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command():
    tests = _commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == tests
