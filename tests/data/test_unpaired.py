"""KTO rows: reading (own shape and unpaired preference rows), encoding, the balance rule, and
the checks the plan makes for KTO, ORPO and SimPO before a model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finetuning.config.data import ChatTemplateName as T
from finetuning.config.loading import load_config_dict
from finetuning.data.encode import IGNORE, OK, TOO_LONG, TRUNCATED, EncodeSettings
from finetuning.data.rows import read_rows
from finetuning.data.templates import render
from finetuning.data.unpaired import balance_lines, encode_unpaired_chunk
from finetuning.errors import UserError
from finetuning.train.plan import build_plan
from tests.helpers import minimal_dpo

PROMPT = [{"role": "user", "content": "What is two plus two?"}]
GOOD = [{"role": "assistant", "content": "Four."}]
BAD = [{"role": "assistant", "content": "Five."}]


def _write(tmp_path, rows):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kto_reads_its_rows_and_unpairs_preference_rows(tmp_path):
    rows = [
        {"prompt_messages": PROMPT, "completion_messages": GOOD, "label": True, "id": "a"},
        {"prompt_messages": PROMPT, "chosen_messages": GOOD, "rejected_messages": BAD, "id": "b"},
    ]
    read = read_rows(_write(tmp_path, rows), "kto", "k")
    assert [(r.get("id"), r["label"], r["completion_messages"]) for r in read] == [
        ("a", True, GOOD),
        ("b", True, GOOD),  # chosen: desirable
        ("b", False, BAD),  # rejected: undesirable
    ]
    assert all(r["_where"].endswith(f":{line}") for r, line in zip(read, (1, 2, 2), strict=True))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"prompt_messages": PROMPT, "completion_messages": GOOD, "label": "yes"},
            r"rows.jsonl:1: `label` must be true \(desirable\) or false \(undesirable\), got 'yes'",
        ),
        (
            {"prompt_messages": PROMPT, "completion_messages": GOOD},
            r"rows.jsonl:1: missing `label`; a kto row has `prompt_messages`, "
            r"`completion_messages` and `label`.*or is a preference row",
        ),
        (
            {"messages": PROMPT + GOOD},
            r"rows.jsonl:1: missing `prompt_messages`, `completion_messages`, `label`",
        ),
        (
            {"prompt_messages": PROMPT, "completion_messages": PROMPT, "label": False},
            r"`completion_messages` must end with an assistant message",
        ),
        (
            {"prompt_messages": PROMPT, "chosen_messages": GOOD, "rejected_messages": PROMPT},
            r"`rejected_messages` must end with an assistant message",
        ),
    ],
)
def test_a_wrong_kto_row_names_the_row_and_the_expected_shape(tmp_path, row, message):
    with pytest.raises(UserError, match=message):
        read_rows(_write(tmp_path, [row]), "kto", "k")


def test_a_kto_row_in_a_dpo_run_names_the_kto_shape(tmp_path):
    row = {"prompt_messages": PROMPT, "completion_messages": GOOD, "label": True}
    with pytest.raises(UserError, match=r"\(this looks like a kto row\); a orpo row has"):
        read_rows(_write(tmp_path, [row]), "orpo", "k")


def test_completion_is_what_the_conversation_adds_after_the_prompt(template_tokenizer):
    tok = template_tokenizer
    row = {"prompt_messages": PROMPT, "completion_messages": GOOD, "label": False}
    store = encode_unpaired_chunk([row], tok, EncodeSettings(T.CHAT_ML, 1000))
    ex = store.example(0)
    assert ex["label"] is False and store.status.tolist() == [OK]
    full = render(T.CHAT_ML, PROMPT + GOOD, tok)
    ids = tok(full.text, add_special_tokens=False)["input_ids"]
    if not full.text.startswith(tok.bos_token):
        ids = [tok.bos_token_id, *ids]
    joined = ex["prompt_ids"] + ex["completion_ids"]
    assert ids[: len(joined)] == joined
    assert tok.decode(ex["completion_ids"]).strip() == "Four.<|im_end|>"
    ids, labels = store.row(0)  # the preflight's view: the prompt masked
    assert (labels[: len(ex["prompt_ids"])] == IGNORE).all()
    assert labels[len(ex["prompt_ids"]) :].tolist() == ex["completion_ids"]


def test_too_long_examples_are_cut_as_for_dpo(template_tokenizer):
    long_prompt = [{"role": "user", "content": "word " * 80}]
    rows = [
        {"prompt_messages": long_prompt, "completion_messages": GOOD, "label": True},
        {"prompt_messages": PROMPT, "completion_messages": GOOD, "label": True},
    ]
    settings = EncodeSettings(T.CHAT_ML, 40, max_prompt_length=20, truncation_mode="keep_end")
    store = encode_unpaired_chunk(rows, template_tokenizer, settings)
    assert store.status.tolist()[0] == TRUNCATED
    assert len(store.example(0)["prompt_ids"]) == 20 and store.lengths()[0] <= 40
    tight = EncodeSettings(T.CHAT_ML, 8, max_prompt_length=None)
    assert encode_unpaired_chunk(rows[:1], template_tokenizer, tight).status.tolist() == [TOO_LONG]


def _trl_recommends(n_d, n_u, dw, uw):
    """TRL 1.16's check, as KTOTrainer._prepare_dataset writes it (the reference)."""
    des = (round(n_u * uw / n_d * 1, 2), round(n_u * uw / n_d * 1.33, 2))
    und = (round(n_d * dw / n_u / 1.33, 2), round(n_d * dw / n_u / 1, 2))
    in_range = des[0] <= dw <= des[1] or und[0] <= uw <= und[1]
    return des, und, in_range


@pytest.mark.parametrize(
    ("n_d", "n_u", "dw", "uw"),
    [(300, 100, 1.0, 1.0), (300, 100, 0.4, 1.0), (300, 100, 1.0, 2.5), (50, 100, 1.0, 1.0),
     (50, 100, 2.2, 1.0), (100, 100, 1.0, 1.0)],
)  # fmt: skip
def test_balance_rule_matches_trl(n_d, n_u, dw, uw):
    des, und, in_range = _trl_recommends(n_d, n_u, dw, uw)
    lines, warnings = balance_lines(n_d, n_u, dw, uw)
    assert f"{n_d} desirable, {n_u} undesirable" in lines[0]
    assert f"desirable_weight in [{des[0]:g}, {des[1]:g}]" in lines[1]
    assert f"undesirable_weight in [{und[0]:g}, {und[1]:g}]" in lines[1]
    assert bool(warnings) == (n_d != n_u and not in_range)


def test_balance_warns_when_one_kind_is_missing():
    _, warnings = balance_lines(40, 0, 1.0, 1.0)
    assert any("KTO needs both kinds" in w for w in warnings)


def _kto(tmp_path, **training_args):
    raw = minimal_dpo(training_args={"output_dir": str(tmp_path / "o"), **training_args})
    raw["method"] = "kto"
    return raw


def test_the_plan_refuses_a_kto_micro_batch_of_one_before_any_data(tmp_path):
    raw = _kto(tmp_path)
    raw["batchsize_conf"] = {"total_train_batch_size": 4, "max_per_device_train_batch_size": 1}
    with pytest.raises(UserError, match=r"at least 2 examples per device.*resolves to 1"):
        build_plan(load_config_dict(raw, "kto"), 1, with_data=False)
    # Four per device on one process, one on four processes.
    raw["batchsize_conf"]["max_per_device_train_batch_size"] = 4
    build_plan(load_config_dict(raw, "kto"), 1, with_data=False)
    with pytest.raises(UserError, match="at least 2 examples per device"):
        build_plan(load_config_dict(raw, "kto"), 4, with_data=False)
    # The loss without a KL term needs neither.
    no_kl = _kto(tmp_path, loss_type="apo_zero_unpaired", train_sampling_strategy="random")
    no_kl["batchsize_conf"] = raw["batchsize_conf"]
    build_plan(load_config_dict(no_kl, "kto"), 4, with_data=False)
    with pytest.raises(UserError, match=r"train_sampling_strategy: 'random'.*use 'sequential'"):
        build_plan(
            load_config_dict(_kto(tmp_path, train_sampling_strategy="random"), "kto"),
            1,
            with_data=False,
        )


@pytest.mark.parametrize("method", ["kto", "orpo", "simpo"])
def test_method_configs_check_their_own_fields(method, tmp_path):
    raw = _kto(tmp_path, truncation_mode="keep_middle")
    raw["method"] = method
    with pytest.raises(UserError, match=r"training_args.truncation_mode.*'keep_middle' is not"):
        load_config_dict(raw, method)
    raw["training_args"] = {"desirable_weight": 2.0}
    if method == "kto":
        assert load_config_dict(raw, method).config.training_args["desirable_weight"] == 2.0
    else:  # a KTO field is unknown to ORPO / CPO
        with pytest.raises(UserError, match="desirable_weight: Additional properties"):
            load_config_dict(raw, method)
    raw = _kto(tmp_path)
    raw["method"] = method
    raw["sft_args"] = {"max_seq_length": 10}
    with pytest.raises(UserError, match=f"sft_args: must be absent or null for {method}"):
        load_config_dict(raw, method)


def test_the_subcommand_must_match_the_config_method(tmp_path):
    raw = _kto(tmp_path)
    with pytest.raises(UserError, match="the config says method: 'kto' but the command is 'orpo'"):
        load_config_dict(raw, "orpo")


def test_preflight_counts_desirable_and_undesirable_examples(tmp_path, tiny_llama):
    rows = [{"prompt_messages": PROMPT, "completion_messages": GOOD, "label": True}] * 3 + [
        {"prompt_messages": PROMPT, "chosen_messages": GOOD, "rejected_messages": BAD}
    ]
    raw = _kto(tmp_path)
    raw["run_conf"]["model"] = str(tiny_llama)
    raw["data_conf"]["training_data"]["datasets"] = [{"path": str(_write(tmp_path, rows))}]
    plan = build_plan(load_config_dict(raw, "kto"), 1)
    text = plan.report.format()
    assert "kto examples: 4 desirable, 1 undesirable; desirable_weight 1" in text
    assert "preference rows unpaired into one desirable and one undesirable example: 1" in text
    assert "WARNING: the kto weights do not balance 4 desirable against 1 undesirable" in text
    assert np.asarray(plan.data.train.store.label).sum() == 4


def test_kto_dataset_is_shuffled_once_and_gets_trls_kl_completions():
    from types import SimpleNamespace

    from finetuning.data.preference import _store
    from finetuning.data.prepare import EncodedSplit
    from finetuning.data.unpaired import UnpairedStore
    from finetuning.train.methods.kto import kto_dataset, pretokenized_trainer_class

    completions = [np.asarray([10 + i], np.int64) for i in range(6)]
    store = UnpairedStore(
        _store([np.asarray([1], np.int64)] * 6, labelled=False),
        _store(completions, labelled=True),
        np.asarray([True] * 3 + [False] * 3),
        np.zeros(6, np.int8),
        np.full(6, 2),
    )
    split = EncodedSplit(store, np.arange(5))  # the sixth example is held out
    in_order = kto_dataset(split, None)
    assert in_order["completion_ids"] == [[10], [11], [12], [13], [14]]
    shuffled = kto_dataset(split, 3)
    assert shuffled["completion_ids"] == kto_dataset(split, 3)["completion_ids"]  # same each run
    assert shuffled["completion_ids"] != in_order["completion_ids"]
    assert sorted(shuffled["completion_ids"]) == in_order["completion_ids"]
    # The override keeps TRL's KL construction: completions rotated by one per micro-batch.
    trainer = SimpleNamespace(calculate_KL=True)
    args = SimpleNamespace(per_device_train_batch_size=2)
    prepared = pretokenized_trainer_class()._prepare_dataset(trainer, in_order, None, args, "train")
    assert prepared["KL_completion_ids"] == [[11], [10], [13], [12], [14]]
    assert prepared["label"] == [True, True, True, False, False]
    trainer.calculate_KL = False  # apo_zero_unpaired: no KL term, the rows as they are
    unchanged = pretokenized_trainer_class()._prepare_dataset(trainer, in_order, None, args, "x")
    assert "KL_completion_ids" not in unchanged.column_names
