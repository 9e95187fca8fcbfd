"""keep-original through the CLI: the history rule in the preflight, dropped content refused,
the opt-out counted, and a run on a template that rewrites history keeping the original."""

from __future__ import annotations

import shutil

import pytest

from finetuning.testing import synthetic_chats, synthetic_tool_chats, write_jsonl
from tests.data import template_corpus as corpus
from tests.helpers import losses, minimal_sft, run_main, write_config


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny Llama with room in its embeddings for a template's control tokens."""
    from finetuning.testing import build_model

    return build_model(tmp_path_factory.mktemp("models") / "llama", "llama", vocab_size=1100)


def _model_with(template_name: str, base, folder, eos: str | None = None):
    """A copy of the tiny model whose tokenizer carries one of TRL's original templates."""
    shutil.copytree(base, folder)
    tokenizer = corpus.template_tokenizer(corpus.trl_templates()[template_name], str(folder))
    if eos:  # as the model family's tokenizer sets it
        tokenizer.eos_token = eos
    tokenizer.save_pretrained(folder)
    return folder


def _two_turn_chats(n: int) -> list[dict]:
    chats = synthetic_chats(2 * n, seed=3)
    return [{"messages": chats[2 * i]["messages"] + chats[2 * i + 1]["messages"]} for i in range(n)]


def _config(model, data, **data_conf):
    config = minimal_sft(model, data)
    config["data_conf"].update(chat_template_name="keep-original", **data_conf)
    config["sft_args"].update(max_seq_length=1024, train_on_completions_only=True)
    return config


def test_validate_says_which_history_rule_ran_with_examples_and_tokens(base_model, tmp_path):
    model = _model_with("qwen3", base_model, tmp_path / "qwen3", eos="<|im_end|>")
    data = write_jsonl(tmp_path / "d.jsonl", _two_turn_chats(6))
    result = run_main("validate", write_config(tmp_path / "c.yaml", _config(model, data)))
    assert result.returncode == 0, result.stderr
    # Qwen3 drops past reasoning (and renders an empty think block in the last turn only):
    # each conversation gives one example per assistant turn.
    assert "history rule (data_conf.history_rule: auto): 0 conversations trained whole " in (
        result.stderr
    )
    assert "6 turn by turn into 12 examples (" in result.stderr
    assert "training rows: 12;" in result.stderr
    assert "end-of-turn marker '<|im_end|>' trained: yes" in result.stderr


def test_a_tool_call_the_template_does_not_render_is_refused_naming_the_row(base_model, tmp_path):
    # Llama 3's original template renders no tools and no tool calls.
    model = _model_with("llama3", base_model, tmp_path / "llama3")
    data = write_jsonl(tmp_path / "d.jsonl", synthetic_tool_chats(3))
    path = write_config(tmp_path / "c.yaml", _config(model, data))
    result = run_main("validate", path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for line, reasoning in ((1, ""), (2, "messages[1].reasoning_content, "), (3, "")):
        assert (
            f"{data}:{line}: the tokenizer's chat template (keep-original) leaves out "
            f"{reasoning}messages[1].tool_calls (get_color), `tools` of this row"
        ) in result.stderr
    assert "(chat-ml, simplified-llama31)" in result.stderr
    # The explicit opt-out trains without them, counted in the preflight.
    config = _config(model, data, allow_unrendered_content=True)
    result = run_main("validate", write_config(tmp_path / "c2.yaml", config))
    assert result.returncode == 0, result.stderr
    assert (
        "WARNING: 3 conversations carry tool calls, tools or reasoning that the tokenizer's "
        "chat template does not render"
    ) in result.stderr


@pytest.mark.slow
def test_a_run_on_a_template_that_rewrites_history_saves_the_original_template(
    base_model, tmp_path
):
    from transformers import AutoTokenizer

    model = _model_with("qwen3", base_model, tmp_path / "qwen3", eos="<|im_end|>")
    data = write_jsonl(tmp_path / "d.jsonl", _two_turn_chats(8))
    out = tmp_path / "out"
    config = _config(model, data)
    config["training_args"] = {
        "learning_rate": 1e-2, "max_steps": 4, "logging_steps": 1, "save_strategy": "no",
        "output_dir": str(out),
    }  # fmt: skip
    result = run_main("sft", write_config(tmp_path / "c.yaml", config))
    assert result.returncode == 0, result.stderr
    history = losses(out)
    assert history[-1] < history[0], history
    saved = AutoTokenizer.from_pretrained(out / "checkpoint-final")
    assert saved.chat_template == corpus.trl_templates()["qwen3"]
