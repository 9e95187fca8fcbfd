"""keep-original on the model families' own templates: exact masks for each kind they render.

The corpus is every original template TRL installs (``tests/data/template_corpus.py`` checks
each example on tokens: its untrained part is exactly the prompt of the turn it trains, its
trained part is that turn through the end marker and nothing else). It is tokenizer-only: the
whole corpus takes a few seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.config.data import HistoryRule
from finetuning.data.encode import IGNORE, WHOLE, EncodeSettings, encode_chunk
from finetuning.errors import UserError
from tests.data import template_corpus as corpus

TEMPLATES = corpus.trl_templates()
#: Rendered by the template, and refused on purpose (never trained silently wrong):
REFUSED = {
    # These VLM templates render only content parts ([{"type": "text", ...}]): a string
    # content is dropped, so the turn would train as its end marker alone.
    ("idefics3", "chat"): ".content",
    ("smolvlm", "chat"): ".content",
    # The generation prompt pre-fills an empty think block: the model never generates
    # reasoning at inference, so a reasoning turn cannot be trained as it is generated.
    ("qwen3_5_nothink", "reasoning"): ".reasoning_content",
}

#: A Mistral v3 Tekken-style template (written for this test): the tool list goes before the
#: LAST user turn and the system prompt into it, so history is rewritten as the chat grows.
TEKKEN = (
    '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}"
    "{%- endif %}"
    '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}'
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    '{%- if message["role"] == "user" %}'
    "{%- if tools and (message == user_messages[-1]) %}"
    '{{- "[AVAILABLE_TOOLS]" + (tools | tojson) + "[/AVAILABLE_TOOLS]" }}{%- endif %}'
    "{%- if loop.last and system_message is defined %}"
    '{{- "[INST]" + system_message + "\\n\\n" + message["content"] + "[/INST]" }}'
    '{%- else %}{{- "[INST]" + message["content"] + "[/INST]" }}{%- endif %}'
    '{%- elif message["role"] == "assistant" and message.tool_calls %}'
    '{{- "[TOOL_CALLS][" }}{%- for tc in message.tool_calls %}'
    '{{- {"name": tc.function.name, "arguments": tc.function.arguments} | tojson }}'
    '{%- if not loop.last %}{{- ", " }}{%- endif %}{%- endfor %}{{- "]" + eos_token }}'
    '{%- elif message["role"] == "assistant" %}{{- message["content"] + eos_token }}'
    '{%- elif message["role"] == "tool" %}'
    '{{- "[TOOL_RESULTS]" + {"content": message.content} | tojson + "[/TOOL_RESULTS]" }}'
    "{%- endif %}{%- endfor %}"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpus-tokenizer"))


def _tokenizer(name: str, folder: str):
    return corpus.template_tokenizer(TEKKEN if name == "tekken" else TEMPLATES[name], folder)


@pytest.mark.parametrize("kind", corpus.KINDS)
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_original_template_trains_each_kind_it_renders_with_exact_masks(name, kind, folder):
    tokenizer = _tokenizer(name, folder)
    found = corpus.renderable(tokenizer, kind)
    if found is None or (name, kind) in REFUSED:
        # What the template cannot render is refused naming the row, never trained without it.
        messages = found[0] if found else corpus.conversation(kind)
        tools = corpus.TOOLS if kind == "tools" else None
        row = {"messages": messages, "tools": tools, "_where": "d.jsonl:3"}
        settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True)
        with pytest.raises(UserError, match=r"d\.jsonl:3: ") as info:
            encode_chunk([row], tokenizer, settings)
        if (name, kind) in REFUSED:
            assert f"leaves out messages[2]{REFUSED[name, kind]}" in str(info.value)
        return
    outcome = corpus.check(tokenizer, *found, HistoryRule.AUTO)
    assert outcome.trains, outcome.problem


def test_the_corpus_is_the_one_the_issue_counted(folder):
    """84 template x kind combinations render (the issue's count); all but REFUSED train."""
    outcomes = corpus.run_corpus(folder)
    rendered = [o for o in outcomes if o.renders]
    assert len(TEMPLATES) == 41 and len(rendered) == 84
    failing = {(o.template, o.kind) for o in rendered if not o.trains}
    assert failing == set(REFUSED)


def test_mistral_tekken_tools_train_turn_by_turn_as_generated(folder):
    tokenizer = _tokenizer("tekken", folder)
    messages, tools = corpus.renderable(tokenizer, "tools")
    outcome = corpus.check(tokenizer, messages, tools, HistoryRule.AUTO)
    assert outcome.trains, outcome.problem
    assert (outcome.rule, outcome.examples) == ("per-turn", 3)
    settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True)
    store = encode_chunk([{"messages": messages, "tools": tools}], tokenizer, settings)
    ids, labels = store.row(0)  # the tool call's example
    trained = labels != IGNORE
    prompt = tokenizer.decode(ids[~trained].tolist())
    # At inference the tools and the system prompt sit in the last user turn.
    assert prompt.endswith("[/AVAILABLE_TOOLS][INST]be brief\n\nred apple[/INST]"), prompt
    call = '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]</s>'
    assert tokenizer.decode(ids[trained].tolist()) == call


def test_the_history_rules(folder):
    qwen3, qwen25 = _tokenizer("qwen3", folder), _tokenizer("qwen2_5", folder)
    messages = corpus.conversation("reasoning")
    cases = [  # (tokenizer, rule, rule that ran, examples)
        (qwen3, HistoryRule.AUTO, "per-turn", 2),
        (qwen3, HistoryRule.PER_TURN, "per-turn", 2),
        (qwen3, HistoryRule.LAST_TURN, "per-turn", 1),
        (qwen25, HistoryRule.AUTO, "whole", 1),  # prefix-preserving: one example
        (qwen25, HistoryRule.PER_TURN, "per-turn", 2),
    ]
    for tokenizer, rule, ran, examples in cases:
        chat = messages if tokenizer is qwen3 else corpus.conversation("chat")
        outcome = corpus.check(tokenizer, chat, None, rule)
        assert outcome.trains, (rule, outcome.problem)
        assert (outcome.rule, outcome.examples) == (ran, examples), rule
    settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, history_rule=HistoryRule.WHOLE)
    with pytest.raises(UserError, match=r"d\.jsonl:1: the tokenizer's chat template renders"):
        encode_chunk([{"messages": messages, "_where": "d.jsonl:1"}], qwen3, settings)


def test_generation_blocks_give_the_spans(folder):
    """A template with {% generation %} blocks: the labels are transformers' assistant masks."""
    from pathlib import Path

    import trl

    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3_training.jinja").read_text()
    tokenizer = corpus.template_tokenizer(template, folder)
    messages = corpus.conversation("reasoning")
    store = encode_chunk(
        [{"messages": messages}],
        tokenizer,
        EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True),
    )
    assert len(store) == 1 and store.flags[0] & WHOLE  # TRL made it prefix-preserving
    ids, labels = store.row(0)
    masks = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    start = len(ids) - len(masks["input_ids"])  # the BOS the encoder adds
    assert ids[start:].tolist() == masks["input_ids"]
    assert ((labels[start:] != IGNORE) == np.asarray(masks["assistant_masks"], bool)).all()
    assert (labels[:start] == IGNORE).all()


def test_preference_completions_follow_a_prefilled_generation_prompt(folder):
    """Nemotron pre-fills `<think>\\n`: the chosen completion continues it, as generated."""
    from finetuning.data.preference import encode_preference_chunk

    tokenizer = _tokenizer("nemotron_3_nano", folder)
    chat = corpus.conversation("chat")
    row = {
        "prompt_messages": chat[:4],
        "chosen_messages": [chat[4]],
        "rejected_messages": [{"role": "assistant", "content": "black plum"}],
    }
    store = encode_preference_chunk([row], tokenizer, EncodeSettings(T.KEEP_ORIGINAL, 10**6))
    prompt = tokenizer.apply_chat_template(chat[:4], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n<think>\n")
    triple = store.triple(0)
    assert tokenizer.decode(triple["prompt_ids"]) == "<s>" + prompt
    assert tokenizer.decode(triple["chosen_ids"]) == "</think>yellow grape<|im_end|>\n"
    assert tokenizer.decode(triple["rejected_ids"]) == "</think>black plum<|im_end|>\n"


def test_prompt_rows_whose_tools_the_template_drops_are_refused(folder):
    from finetuning.data.prompts import encode_prompt_chunk

    tokenizer = _tokenizer("llama3", folder)  # renders no tools
    row = {"prompt_messages": corpus.conversation("chat")[:2], "tools": corpus.TOOLS}
    with pytest.raises(UserError, match=r"p\.jsonl:4: .* leaves out `tools` of this row"):
        encode_prompt_chunk(
            [{**row, "_where": "p.jsonl:4"}], tokenizer, EncodeSettings(T.KEEP_ORIGINAL, 10**6)
        )
    allowed = EncodeSettings(T.KEEP_ORIGINAL, 10**6, allow_unrendered=True)
    assert len(encode_prompt_chunk([row], tokenizer, allowed)) == 1


def test_reasoning_is_masked_turn_by_turn_with_train_on_reasoning_false(folder):
    tokenizer = _tokenizer("qwen3", folder)
    settings = EncodeSettings(
        T.KEEP_ORIGINAL, 10**6, completions_only=True, train_on_reasoning=False
    )
    store = encode_chunk([{"messages": corpus.conversation("reasoning")}], tokenizer, settings)
    assert len(store) == 2
    for e, (reasoning, answer) in enumerate([(corpus.R1, corpus.A1), (corpus.R2, corpus.A2)]):
        ids, labels = store.row(e)
        trained = tokenizer.decode(ids[labels != IGNORE].tolist())
        assert answer in trained and reasoning not in trained
        assert reasoning in tokenizer.decode(ids.tolist())  # shown, not trained


def test_generation_blocks_let_whole_train_a_template_that_rewrites_history(folder):
    # The last assistant turn gets a prefix the others lose: not prefix-preserving.
    template = (
        "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
        "{%- if m.role == 'assistant' %}{%- if loop.last %}{{ 'LAST ' }}{%- endif %}"
        "{%- generation %}{{ m.content + '<|im_end|>' }}{%- endgeneration %}{{ '\\n' }}"
        "{%- else %}{{ m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    tokenizer = corpus.template_tokenizer(template, folder)
    rows = [{"messages": corpus.conversation("chat")}]
    for rule, examples in [(HistoryRule.WHOLE, 1), (HistoryRule.AUTO, 2)]:
        settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True, history_rule=rule)
        store = encode_chunk(rows, tokenizer, settings)
        assert len(store) == examples, rule
        runs = []
        for e in range(len(store)):
            ids, labels = store.row(e)
            runs += [tokenizer.decode(ids[a:b].tolist()) for a, b in corpus._runs(labels)]
        # (" yellow" is one token: it straddles the block's start and is trained whole.)
        assert [r.lstrip() for r in runs] == ["green banana<|im_end|>", "yellow grape<|im_end|>"]


def test_turn_by_turn_examples_keep_their_row_through_chunks_and_the_cache(folder, tmp_path):
    from finetuning.data.encode import TokenStore, encode_rows

    tokenizer = _tokenizer("qwen3", folder)  # per-turn: 2 examples per conversation
    rows = [
        {"messages": corpus.conversation("chat")},
        {"messages": corpus.conversation("chat")[:3]},
    ]
    settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True)
    parts = [encode_chunk(rows, tokenizer, settings), encode_chunk(rows[1:], tokenizer, settings)]
    store = TokenStore.concat(parts)
    assert store.source_rows.tolist() == [0, 0, 1, 2] and store.rows() == 3
    assert store.examples_of(np.array([2, 0, 0])).tolist() == [3, 0, 1, 0, 1]
    store.save(tmp_path)
    loaded = TokenStore.load(tmp_path)
    assert loaded.source_rows.tolist() == [0, 0, 1, 2]
    # One exchange is prefix-preserving even for Qwen3: trained whole.
    assert (np.asarray(loaded.flags) & WHOLE).tolist() == [0, 0, WHOLE, WHOLE]
    assert encode_rows(rows + rows[1:], tokenizer, settings, progress=False).rows() == 3


def test_per_source_numbers_count_rows_when_conversations_train_turn_by_turn(folder, tmp_path):
    """The validation parts and the mixture table group examples by the row they came from:
    a conversation of the first source trained as two examples stays in the first source."""
    from finetuning.config.data import ChatTrainValidConfig
    from finetuning.data.prepare import prepare_data
    from finetuning.testing import write_jsonl

    tokenizer = _tokenizer("qwen3", folder)
    two_turns = write_jsonl(tmp_path / "a.jsonl", [{"messages": corpus.conversation("chat")}] * 4)
    one_turn = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    single = write_jsonl(tmp_path / "b.jsonl", [{"messages": one_turn}] * 4)
    datasets = [{"path": str(two_turns)}, {"path": str(single)}]
    conf = ChatTrainValidConfig(
        training_data={"type": "PRECOMPUTE_WEIGHTED_MIX", "datasets": datasets, "seed": 1},
        validation_data={"type": "CONCATENATION", "datasets": datasets},
        chat_template_name="keep-original",
    )
    settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True)
    prepared = prepare_data(conf, tokenizer, settings, use_cache=False)
    parts = {k: len(v.indices) for k, v in prepared.valid_parts.items()}
    assert parts == {"a": 8, "b": 4}  # 4 conversations x 2 examples, 4 x 1
    table = {row["source"]: row for row in prepared.mixture}
    assert table["a"]["rows_realized"] + table["b"]["rows_realized"] == 8  # rows, not examples
    store = prepared.train.store
    tokens = int(store.lengths()[prepared.train.indices].sum())
    assert table["a"]["tokens_realized"] + table["b"]["tokens_realized"] == tokens


def test_a_conversations_examples_stay_on_one_side_of_the_validation_split(folder, tmp_path):
    from finetuning.config.data import ChatTrainValidConfig
    from finetuning.data.prepare import prepare_data
    from finetuning.testing import write_jsonl

    tokenizer = _tokenizer("qwen3", folder)
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": corpus.conversation("chat")}] * 10)
    conf = ChatTrainValidConfig(
        training_data={"type": "CONCATENATION", "datasets": [{"path": str(data)}]},
        validation_data={"type": "AUTO_SPLIT", "ratio": 0.3},
        chat_template_name="keep-original",
    )
    settings = EncodeSettings(T.KEEP_ORIGINAL, 10**6, completions_only=True)
    prepared = prepare_data(conf, tokenizer, settings, use_cache=False)
    rows = np.asarray(prepared.train.store.source_rows)
    train, valid = rows[prepared.train.indices], rows[prepared.valid.indices]
    assert (len(train), len(valid)) == (14, 6)  # 7 and 3 conversations, 2 examples each
    assert not set(train) & set(valid)
