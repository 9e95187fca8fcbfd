"""The built-in reward functions, resolving user reward functions, and a reward that fails."""

from __future__ import annotations

import pytest

from finetuning.config.grpo import BUILTIN_REWARDS, RewardSpec
from finetuning.errors import UserError
from finetuning.train.methods.reward_loading import RewardCall, RewardFailed, resolve_rewards
from finetuning.train.methods.rewards import (
    BUILTINS,
    exact_answer,
    final_answer,
    length,
    regex_format,
    think_format,
)


def test_the_config_names_exactly_the_builtins():
    assert set(BUILTIN_REWARDS) == set(BUILTINS)


@pytest.mark.parametrize(
    ("completion", "answer"),
    [
        ("so it is \\boxed{ 12 }", "12"),
        ("\\boxed{3} no, wait: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # the last, braces nested
        ("first line\n  the   answer is 7  \n\n", "the answer is 7"),  # the last non-empty line
        ("\\boxed{5} then \\boxed{unclosed", "5"),  # an unclosed box falls back to the one before
        ("   \n ", ""),
    ],
)
def test_final_answer_extraction(completion, answer):
    assert final_answer(completion) == answer


def test_exact_answer_compares_normalised_strings():
    completions = ["\\boxed{42}", "42\n", "41", "\\boxed{4 2}"]
    assert exact_answer(completions, [42, "42", 42, "4  2"]) == [1.0, 1.0, 0.0, 1.0]


def test_regex_format_full_match_or_search():
    completions = ["Answer: 7", "  Answer: 7\n", "I think Answer: 7"]
    assert regex_format(completions, pattern=r"Answer: \d+") == [1.0, 1.0, 0.0]
    assert regex_format(completions, pattern=r"Answer: \d+", search=True) == [1.0, 1.0, 1.0]


def test_length_is_closeness_to_the_target():
    ids = [[1] * 10, [1] * 5, [1] * 20, [1] * 30]
    assert length(["x"] * 4, ids, target=10) == [1.0, 0.5, 0.0, 0.0]
    assert length(["abcd", "ab"], [[1], [1]], target=4, unit="chars") == [1.0, 0.5]


def test_think_format():
    completions = [
        "<think>add them</think> 7",
        "\n<think></think>\n\\boxed{7}",
        "<think>only thinking</think>   ",
        "7 <think>late</think> 7",
        "<think>a</think> 7 <think>again</think> 8",
        "no tags",
    ]
    assert think_format(completions) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]


USER = """
def score(completions, answer, bonus=0.0):
    return [float(c == a) + bonus for c, a in zip(completions, answer)]

def everything(**kwargs):
    return [len(kwargs["prompts"][i]) + kwargs["answer"][i] for i in range(len(kwargs["completions"]))]

def flaky(completions, **kwargs):
    return [1.0 / (len(c) - 3) for c in completions]

def wrong_count(completions):
    return [1.0]

def not_numbers(completions):
    return ["high" for c in completions]
"""


@pytest.fixture
def user_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "user_rewards.py").write_text(USER)
    return tmp_path


def _call(reward, completions, **columns):
    return RewardCall(reward)(prompts=["p"] * len(completions), completions=completions, **columns)


def test_a_user_function_gets_what_it_declares(user_file):
    specs = [
        RewardSpec(function="sub/user_rewards.py:score", kwargs={"bonus": 0.5}),
        RewardSpec(function="sub/user_rewards.py:everything", weight=2.0),
        RewardSpec(function="exact_answer"),
        RewardSpec(function="exact_answer"),
    ]
    rows = [{"prompt_messages": [], "answer": 1}]
    score, everything, exact, exact_2 = resolve_rewards(specs, user_file, rows)
    assert [r.name for r in (score, everything, exact, exact_2)] == [
        "score", "everything", "exact_answer", "exact_answer_2",
    ]  # fmt: skip
    assert everything.weight == 2.0 and everything.takes_all
    # Only declared parameters (no trainer_state, no _where) reach `score`.
    columns = {"answer": ["a", "b"], "_where": ["f:1", "f:2"], "trainer_state": None}
    assert _call(score, ["a", "x"], **columns) == [1.5, 0.5]
    assert _call(everything, ["a", "b"], answer=[1, 2]) == [2, 3]


def test_a_user_file_is_imported_once(user_file):
    spec = RewardSpec(function="sub/user_rewards.py:score")
    first = resolve_rewards([spec], user_file)[0].function
    assert resolve_rewards([spec], user_file)[0].function is first


def test_a_required_column_missing_from_a_row_is_named(user_file):
    rows = [{"answer": 1, "_where": "d.jsonl:1"}, {"_where": "d.jsonl:2"}]
    with pytest.raises(UserError, match=r"needs 'answer'.*d.jsonl:2 has no 'answer'"):
        resolve_rewards([RewardSpec(function="sub/user_rewards.py:score")], user_file, rows)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"function": "length", "kwargs": {"target": 0}}, "kwargs.target: must be a positive"),
        ({"function": "length"}, "must be a positive number, got None"),
        ({"function": "length", "kwargs": {"target": 3, "unit": "words"}}, "tokens or chars"),
        ({"function": "exact_answer", "kwargs": {"completions": 1}}, "passed by the trainer"),
    ],
)
def test_builtin_kwargs_are_checked(spec, message, tmp_path):
    with pytest.raises(UserError, match=message):
        resolve_rewards([RewardSpec(**spec)], tmp_path)


def test_the_config_refuses_a_function_that_is_no_import_path():
    with pytest.raises(ValueError, match="neither a built-in reward"):
        RewardSpec(function="exact answer")


def test_a_failing_reward_names_the_function_the_row_and_the_completion(user_file):
    flaky = resolve_rewards([RewardSpec(function="sub/user_rewards.py:flaky")], user_file)[0]
    where = ["sums.jsonl:4", "sums.jsonl:9"]
    with pytest.raises(RewardFailed) as caught:
        _call(flaky, ["long enough", "abc"], _where=where)
    text = str(caught.value)
    assert "flaky" in text and "ZeroDivisionError" in text
    assert "on sums.jsonl:9 (completion 'abc')" in text
    assert "grpo_args.rewards[0]" in text


@pytest.mark.parametrize(
    ("name", "message"),
    [("wrong_count", "returned 1 rewards for 2 completions"), ("not_numbers", "'high'")],
)
def test_an_unusable_result_is_reported(user_file, name, message):
    reward = resolve_rewards([RewardSpec(function=f"sub/user_rewards.py:{name}")], user_file)[0]
    with pytest.raises(RewardFailed, match=message):
        _call(reward, ["a", "b"])
