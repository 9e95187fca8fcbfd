"""replace_tokens: renamed tokens keep their ids, and renaming back restores the tokenizer."""

from __future__ import annotations

import json

import pytest

from finetuning.cli import main as cli_main
from finetuning.data.templates import SPECS
from finetuning.errors import UserError
from finetuning.testing import build_tokenizer
from finetuning.tools.replace_tokens import main, replace_tokens

RESERVED = ["<|reserved_0|>", "<|reserved_1|>"]


@pytest.fixture(scope="module")
def reserved(tmp_path_factory):
    """A tiny tokenizer with two unused reserved special tokens, as many models ship."""
    folder = tmp_path_factory.mktemp("tok") / "reserved"
    tok = build_tokenizer(folder)
    tok.add_special_tokens({"additional_special_tokens": RESERVED})
    tok.save_pretrained(folder)
    return folder


def _load(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _backend(folder) -> dict:
    from tokenizers import Tokenizer

    return json.loads(Tokenizer.from_file(str(folder / "tokenizer.json")).to_str())


def test_reserved_tokens_become_the_chat_ml_markers_with_the_same_ids(reserved, tmp_path):
    before = _load(reserved)
    out = replace_tokens(
        reserved,
        tmp_path / "out",
        {"<|reserved_0|>": "<|im_start|>", "<|reserved_1|>": "<|im_end|>"},
    )
    after = _load(out)
    assert len(after) == len(before)
    old_vocab, new_vocab = before.get_vocab(), after.get_vocab()
    assert new_vocab["<|im_start|>"] == old_vocab["<|reserved_0|>"]
    assert new_vocab["<|im_end|>"] == old_vocab["<|reserved_1|>"]
    assert {t: i for t, i in new_vocab.items() if not t.startswith("<|im_")} == {
        t: i for t, i in old_vocab.items() if t not in RESERVED
    }
    # The markers encode as single tokens: chat-ml needs no new embedding rows.
    ids = after("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == old_vocab["<|reserved_0|>"] and ids[-1] == old_vocab["<|reserved_1|>"]
    assert all(t in new_vocab for t in SPECS["chat-ml"].added_tokens)
    assert after.extra_special_tokens == ["<|im_start|>", "<|im_end|>"]


def test_renaming_back_round_trips(reserved, tmp_path):
    there = replace_tokens(reserved, tmp_path / "there", {"<|reserved_0|>": "<|im_start|>"})
    back = replace_tokens(there, tmp_path / "back", {"<|im_start|>": "<|reserved_0|>"})
    assert _backend(back) == _backend(reserved)
    original = json.loads((reserved / "tokenizer_config.json").read_text())
    assert json.loads((back / "tokenizer_config.json").read_text()) == original
    text = "<|reserved_0|> the red apple"
    assert _load(back)(text)["input_ids"] == _load(reserved)(text)["input_ids"]


def test_special_token_names_follow_in_the_post_processor_and_config(reserved, tmp_path):
    out = replace_tokens(reserved, tmp_path / "out", {"<s>": "<|begin_of_text|>"})
    tok = _load(out)
    assert tok.bos_token == "<|begin_of_text|>"
    assert tok("hi")["input_ids"][0] == _load(reserved).bos_token_id  # BOS is still added


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"<|nope|>": "<|x|>"}, "--from '<|nope|>' is not a token"),
        ({"<|reserved_0|>": "</s>"}, "--to '</s>' already is a token"),
        ({"the": "<|x|>"}, "regular token the BPE merges use"),
        ({"<|reserved_0|>": "<|x|>", "<|reserved_1|>": "<|x|>"}, "the same --to name"),
    ],
)
def test_refusals(reserved, tmp_path, mapping, message):
    with pytest.raises(UserError, match=message.replace("|", r"\|")):
        replace_tokens(reserved, tmp_path / "out", mapping)
    assert not (tmp_path / "out").exists()


def test_console_script_and_subcommand(reserved, tmp_path, capsys):
    args = ["--from", "<|reserved_0|>", "--to", "<|im_start|>"]
    assert main([str(reserved), str(tmp_path / "a"), *args]) == 0
    assert "token ids unchanged" in capsys.readouterr().out
    assert cli_main(["replace-tokens", str(reserved), str(tmp_path / "b"), *args]) == 0
    assert _backend(tmp_path / "a") == _backend(tmp_path / "b")
    assert main([str(reserved), str(tmp_path / "a"), *args]) == 2  # not empty
    assert "already exists" in capsys.readouterr().err
    assert main([str(reserved), str(tmp_path / "c"), "--from", "<|reserved_0|>"]) == 2


@pytest.mark.parametrize("new", ["", "   ", "\n"])
def test_an_empty_or_blank_new_token_is_refused(reserved, tmp_path, capsys, new):
    """A special token "" would be written and match nowhere: exit 2, nothing written."""
    out = tmp_path / "out"
    code = cli_main(["replace-tokens", str(reserved), str(out), "--from", "<|reserved_0|>",
                     "--to", new])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"--to {new!r} is empty or only whitespace" in err and "Traceback" not in err
    assert not out.exists()
