"""generate --tools with a template that never renders tools is refused, not answered blind."""

from __future__ import annotations

import json

from finetuning.testing import COLOR_TOOL
from tests.helpers import run_main


def test_generate_tools_with_a_template_that_drops_them_is_refused(tiny_llama, tmp_path):
    # The tiny model's own template (user/assistant markers) ignores `tools` altogether.
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([COLOR_TOOL]))
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"messages": [{"role": "user", "content": "what color?"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--model", tiny_llama, "--input", rows, "--output", out]
    result = run_main(*args, "--tools", tools, "--max-new-tokens", "2")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        "the tokenizer's chat template does not render tools: the prompt holds no schema for "
        "get_color" in result.stderr
    )
    assert not out.exists()
    # Without --tools the same rows generate.
    assert run_main(*args, "--max-new-tokens", "2").returncode == 0
