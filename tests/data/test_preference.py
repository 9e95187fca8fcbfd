"""Preference encoding: prompt + completion tokenise exactly as the full conversation does."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.data.encode import OK, TOO_LONG, TRUNCATED, EncodeSettings
from finetuning.data.preference import encode_preference_chunk
from finetuning.data.templates import SPECS, render
from finetuning.errors import UserError

ROW = {
    "prompt_messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}],
    "chosen_messages": [{"role": "assistant", "content": "good answer"}],
    "rejected_messages": [{"role": "assistant", "content": "bad"}],
}


@pytest.fixture(scope="module")
def tokenizer(template_tokenizer):
    return template_tokenizer


@pytest.mark.parametrize("template", list(T))
def test_prompt_plus_completion_is_the_full_conversation(template, tokenizer):
    store = encode_preference_chunk([ROW], tokenizer, EncodeSettings(template, 1000))
    triple = store.triple(0)
    for key in ("chosen", "rejected"):
        full = render(template, ROW["prompt_messages"] + ROW[f"{key}_messages"], tokenizer)
        ids = tokenizer(full.text, add_special_tokens=False)["input_ids"]
        if not full.text.startswith(tokenizer.bos_token):
            ids = [tokenizer.bos_token_id, *ids]
        joined = triple["prompt_ids"] + triple[f"{key}_ids"]
        assert ids[: len(joined)] == joined
        # What follows the completion is only whitespace after the end marker.
        assert tokenizer.decode(ids[len(joined) :]).strip() == ""
        end = SPECS[template].end_marker if template in SPECS else None
        # keep-original: the end marker is whatever its template writes after the content.
        assert tokenizer.decode(triple[f"{key}_ids"]).rstrip().endswith(end or tokenizer.eos_token)
    assert store.status.tolist() == [OK]


def test_chat_ml_completion_text(tokenizer):
    store = encode_preference_chunk([ROW], tokenizer, EncodeSettings(T.CHAT_ML, 1000))
    triple = store.triple(0)
    assert tokenizer.decode(triple["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(triple["chosen_ids"]) == "good answer<|im_end|>"
    assert tokenizer.decode(triple["rejected_ids"]) == "bad<|im_end|>"


def test_truncation_keeps_the_prompt_end_then_cuts_completions(tokenizer):
    full = encode_preference_chunk([ROW], tokenizer, EncodeSettings(T.CHAT_ML, 1000))
    prompt_len = len(full.triple(0)["prompt_ids"])
    settings = EncodeSettings(T.CHAT_ML, max_length=prompt_len, max_prompt_length=prompt_len - 4)
    cut = encode_preference_chunk([ROW], tokenizer, settings)
    triple = cut.triple(0)
    assert cut.status.tolist() == [TRUNCATED]
    assert triple["prompt_ids"] == full.triple(0)["prompt_ids"][-(prompt_len - 4) :]
    assert len(triple["chosen_ids"]) == 4
    keep_start = encode_preference_chunk(
        [ROW],
        tokenizer,
        EncodeSettings(T.CHAT_ML, prompt_len, None, False, prompt_len - 4, "keep_start"),
    )
    assert keep_start.triple(0)["prompt_ids"] == full.triple(0)["prompt_ids"][: prompt_len - 4]


def test_prompt_that_fills_max_length_drops_the_row(tokenizer):
    store = encode_preference_chunk([ROW], tokenizer, EncodeSettings(T.CHAT_ML, 5))
    assert store.status.tolist() == [TOO_LONG]
    assert all(len(v) == 0 for v in store.triple(0).values())


def test_a_template_that_renders_the_prompt_differently_is_an_error_naming_the_row(tokenizer):
    tok = copy.deepcopy(tokenizer)
    # The generation prompt is not what the full conversation writes after the prompt.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT>{% endif %}"
    )
    row = {**ROW, "_where": "prefs.jsonl:7"}
    with pytest.raises(UserError, match=r"prefs.jsonl:7: the (tokenizer.s chat )?template renders"):
        encode_preference_chunk([row], tok, EncodeSettings(T.KEEP_ORIGINAL, 1000))


def test_cache_round_trip(tokenizer, tmp_path):
    from finetuning.data.preference import PreferenceStore

    store = encode_preference_chunk([ROW, ROW], tokenizer, EncodeSettings(T.PORO, 1000))
    store.save(tmp_path)
    loaded = PreferenceStore.load(tmp_path)
    assert loaded.triple(1) == store.triple(1)
    assert np.array_equal(loaded.status, store.status)


@pytest.mark.parametrize("template", [T.CHAT_ML, T.KEEP_ORIGINAL])
def test_conversation_ids_are_prompt_plus_completion(template, tokenizer):
    from finetuning.data.preference import conversation_ids

    triple = encode_preference_chunk([ROW], tokenizer, EncodeSettings(template, 1000)).triple(0)
    for key in ("chosen", "rejected"):
        messages = ROW["prompt_messages"] + ROW[f"{key}_messages"]
        ids = conversation_ids(template, messages, tokenizer).tolist()
        assert ids == triple["prompt_ids"] + triple[f"{key}_ids"]


def test_reward_drops_a_pair_that_does_not_fit_instead_of_cutting_it(tokenizer):
    full = encode_preference_chunk([ROW], tokenizer, EncodeSettings(T.CHAT_ML, 1000)).triple(0)
    fits = len(full["prompt_ids"]) + len(full["chosen_ids"])  # chosen is the longer one
    drop = EncodeSettings(T.CHAT_ML, fits - 1, truncation_mode="drop")
    assert encode_preference_chunk([ROW], tokenizer, drop).status.tolist() == [TOO_LONG]
    kept = EncodeSettings(T.CHAT_ML, fits, truncation_mode="drop")
    assert encode_preference_chunk([ROW], tokenizer, kept).triple(0) == full
