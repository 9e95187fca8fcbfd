"""The model families' own chat templates (TRL's originals) against keep-original's masks.

For each original template TRL installs in ``trl/chat_templates/`` (the files without
``_training``) and each kind of conversation (multi-turn chat, tool calls with tool results,
reasoning), this builds a tokenizer that carries the template and its special tokens (each a
single token), decides whether the template can render the kind at all, encodes the
conversation as training does, and checks the masks on tokens, independently of how the spans
were derived:

* every trained turn's example starts with exactly the tokens of the prompt the model gets when
  it generates that turn (the conversation before it, with the generation prompt), none of
  them trained;
* the trained tokens are that turn only: its content, reasoning and tool call, through the
  template's end marker; no user, system or tool-result text, nor any other turn's content;
* every assistant turn is trained exactly once over the conversation's examples.

Run ``python -m tests.data.template_corpus`` for the table (template x kind: rule, examples).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetuning.config.data import ChatTemplateName, HistoryRule
from finetuning.data.encode import IGNORE, WHOLE, EncodeSettings, encode_chunk, special_prefix

#: Text that looks like a template's control token: ``<|im_start|>``, ``<｜User｜>``,
#: ``<|turn>``/``<turn|>`` (Gemma 4), ``<start_of_turn>``, ``</think>``, ``[INST]``.
CONTROL = re.compile(
    r"<[|｜][^<>\s]{0,40}?>|<[^<>\s|｜]{1,40}[|｜]>|</?[A-Za-z_][A-Za-z0-9_]*>|\[/?[A-Z_]{3,}\]"
)
KINDS = ("chat", "tools", "reasoning")
SYSTEM, USER1, USER2, RESULT = "be brief", "red apple", "blue cherry", "sunny"
A1, A2, R1, R2 = "green banana", "yellow grape", "think lemon", "think mango"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _call(as_string: bool) -> dict[str, Any]:
    """The tool call (arguments as an object, or as the JSON string some templates need)."""
    arguments = {"city": "Paris"}
    return {
        "type": "function",
        "function": {
            "name": "get_weather",
            "arguments": json.dumps(arguments) if as_string else arguments,
        },
    }


def conversation(kind: str, system: bool = True, variant: int = 0) -> list[dict]:
    """The conversation of ``kind``: two assistant answers (and a tool call for tools).

    Tool-call variants: 0 (empty content, arguments an object), 1 (arguments a JSON string),
    2 (no content, arguments a JSON string: DeepSeek renders calls only then).
    """
    head = [{"role": "system", "content": SYSTEM}] if system else []
    if kind == "chat":
        return [
            *head,
            {"role": "user", "content": USER1},
            {"role": "assistant", "content": A1},
            {"role": "user", "content": USER2},
            {"role": "assistant", "content": A2},
        ]
    if kind == "tools":
        return [
            *head,
            {"role": "user", "content": USER1},
            {
                "role": "assistant",
                "tool_calls": [_call(variant > 0)],
                **({} if variant == 2 else {"content": ""}),
            },
            {"role": "tool", "name": "get_weather", "tool_call_id": "c1", "content": RESULT},
            {"role": "assistant", "content": A1},
            {"role": "user", "content": USER2},
            {"role": "assistant", "content": A2},
        ]
    return [
        *head,
        {"role": "user", "content": USER1},
        {"role": "assistant", "reasoning_content": R1, "content": A1},
        {"role": "user", "content": USER2},
        {"role": "assistant", "reasoning_content": R2, "content": A2},
    ]


def trl_templates() -> dict[str, str]:
    """TRL's original templates by name (the files without ``_training``)."""
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    return {
        p.stem: p.read_text()
        for p in sorted(folder.glob("*.jinja"))
        if not p.stem.endswith("_training")
    }


@functools.lru_cache(maxsize=1)
def _base(folder: str) -> Any:
    from finetuning.testing import build_tokenizer

    return build_tokenizer(folder, chat_template=False)


def template_tokenizer(template: str, folder: str) -> Any:
    """The tiny tokenizer carrying ``template``, its control tokens added as special tokens."""
    from transformers.utils.chat_template_utils import _get_template_literal_text

    tokenizer = copy.deepcopy(_base(folder))
    tokenizer.chat_template = template
    found = sorted(set(CONTROL.findall(_get_template_literal_text(template))))
    tokenizer.add_special_tokens({"additional_special_tokens": found})
    return tokenizer


def _apply(tokenizer: Any, messages: list, gen: bool, tools: list | None) -> str | None:
    try:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=gen,
            **({"tools": tools} if tools else {}),
        )
    except Exception:
        return None


def renderable(tokenizer: Any, kind: str) -> tuple[list[dict], list | None] | None:
    """The conversation of ``kind`` as this template accepts it, or None if it cannot render it.

    A template may refuse a system turn (Gemma) or want tool arguments as a JSON string
    (DeepSeek); those variants are tried. Tools: the call turn must show the call's arguments
    and the prompt the tool schema. Reasoning: the turn being generated must show its reasoning.
    """
    tools = TOOLS if kind == "tools" else None
    for system in (True, False):
        for variant in (0, 1, 2) if kind == "tools" else (0,):
            messages = conversation(kind, system, variant)
            full = _apply(tokenizer, messages, False, tools)
            if full is None:
                continue
            if kind == "tools":
                call = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
                turn = _apply(tokenizer, messages[: call + 1], False, tools) or ""
                if "Paris" not in turn or "Weather in a city" not in turn:
                    continue
            if kind == "reasoning" and R2 not in (_apply(tokenizer, messages, False, None) or ""):
                return None
            return messages, tools
    return None


@dataclass
class Outcome:
    """What one template x kind gave."""

    template: str
    kind: str
    renders: bool
    trains: bool = False
    rule: str = ""
    examples: int = 0
    tokens: int = 0
    problem: str = ""


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    trained = (labels != IGNORE).astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], trained, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def check(tokenizer: Any, messages: list[dict], tools: list | None, rule: HistoryRule) -> Outcome:
    """Encode one conversation as training does and check its masks (see the module docstring)."""
    settings = EncodeSettings(
        ChatTemplateName.KEEP_ORIGINAL, 10**6, completions_only=True, history_rule=rule
    )
    out = Outcome("", "", True)
    store = encode_chunk(
        [{"messages": messages, "tools": tools, "_where": "row"}], tokenizer, settings
    )
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    whole = bool(store.flags[0] & WHOLE)
    out.rule, out.examples, out.tokens = (
        ("whole" if whole else "per-turn"),
        len(store),
        int(store.lengths().sum()),
    )
    prefix = special_prefix(tokenizer)
    others = [SYSTEM, USER1, USER2, RESULT]
    problems: list[str] = []
    trained_turns: list[int] = []
    for e in range(len(store)):
        ids, labels = (np.asarray(a) for a in store.row(e))
        runs = _runs(labels)
        mine = turns if whole else [turns[e] if rule != HistoryRule.LAST_TURN else turns[-1]]
        if len(runs) != len(mine):
            problems.append(f"example {e}: {len(runs)} trained runs for {len(mine)} turns")
            continue
        for (a, b), i in zip(runs, mine, strict=True):
            trained_turns.append(i)
            prompt = (
                tokenizer.apply_chat_template(
                    messages[:i],
                    tokenize=False,
                    add_generation_prompt=True,
                    **({"tools": tools} if tools else {}),
                )
                if i
                else ""
            )
            expected = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            # The encoder adds the tokenizer's BOS only where the template did not write it.
            added = prefix and expected[: len(prefix)] != prefix
            start = len(prefix) if added and ids[: len(prefix)].tolist() == prefix else 0
            if ids[start : start + len(expected)].tolist() != expected or a != start + len(
                expected
            ):
                problems.append(f"turn {i}: the untrained tokens before it are not its prompt")
            text = tokenizer.decode(ids[a:b].tolist())
            m = messages[i]
            wanted = [m.get("content") or "", m.get("reasoning_content") or ""]
            wanted += ["get_weather"] if m.get("tool_calls") else []
            lost = [w for w in wanted if w and w not in text]
            leaked = [
                o
                for o in others + [messages[t]["content"] for t in turns if t != i]
                if o and o in text
            ]
            if lost or leaked:
                problems.append(f"turn {i}: trained {text!r} (missing {lost}, leaked {leaked})")
            tail = text[text.rfind(wanted[0]) + len(wanted[0]) :] if wanted[0] else text
            if not any(t in tail for t in tokenizer.all_special_tokens):
                problems.append(f"turn {i}: no end marker trained after the content ({text!r})")
    expected_turns = turns if rule != HistoryRule.LAST_TURN else turns[-1:]
    if sorted(trained_turns) != expected_turns:
        problems.append(f"trained turns {trained_turns}, expected {expected_turns}")
    out.trains, out.problem = not problems, "; ".join(problems)
    return out


def run_corpus(folder: str, rule: HistoryRule = HistoryRule.AUTO, names=None) -> list[Outcome]:
    """Every original template x kind: whether it renders, trains, and with what rule."""
    from finetuning.errors import UserError

    outcomes = []
    for name, template in trl_templates().items():
        if names is not None and name not in names:
            continue
        tokenizer = template_tokenizer(template, folder)
        for kind in KINDS:
            found = renderable(tokenizer, kind)
            if found is None:
                outcomes.append(Outcome(name, kind, False))
                continue
            try:
                outcome = check(tokenizer, *found, rule)
            except UserError as exc:
                outcome = Outcome(name, kind, True, problem=str(exc).splitlines()[-1])
            outcome.template, outcome.kind = name, kind
            outcomes.append(outcome)
    return outcomes


def main() -> None:  # pragma: no cover - the measurement script
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="auto", choices=[r.value for r in HistoryRule])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        outcomes = run_corpus(folder, HistoryRule(args.rule))
    print(f"| template | {' | '.join(KINDS)} |\n|---|{'---|' * len(KINDS)}")
    by_name: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_name.setdefault(o.template, []).append(o)
    for name, row in by_name.items():
        cells = [
            "-"
            if not o.renders
            else (f"{o.rule}, {o.examples} ex" if o.trains else f"FAILS: {o.problem[:80]}")
            for o in row
        ]
        print(f"| {name} | {' | '.join(cells)} |")
    rendered = [o for o in outcomes if o.renders]
    print(
        f"\n{len(by_name)} templates; {len(rendered)} of {len(outcomes)} template x kind "
        f"combinations render; {sum(o.trains for o in rendered)} of {len(rendered)} train "
        f"with exact masks (rule {args.rule})"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
