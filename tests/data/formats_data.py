"""Rows in the ecosystem's dataset formats, and local dataset repositories, for the tests.

The rows are our synthetic ones rewritten in each format, so the same content trains whichever
way it arrives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from finetuning.testing import synthetic_chats, synthetic_preferences


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """(user question, assistant answer) of ``n`` synthetic chats."""
    out = []
    for row in synthetic_chats(n, seed=seed, system_share=0.0):
        user, answer = row["messages"][-2:]
        out.append((user["content"], answer["content"]))
    return out


def sharegpt(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [
        {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        for q, a in _pairs(n, seed)
    ]


def alpaca(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [{"instruction": q, "input": "", "output": a} for q, a in _pairs(n, seed)]


def prompt_completion(n: int, seed: int = 0, conversational: bool = False) -> list[dict[str, Any]]:
    if conversational:
        return [
            {
                "prompt": [{"role": "user", "content": q}],
                "completion": [{"role": "assistant", "content": a}],
            }
            for q, a in _pairs(n, seed)
        ]
    return [{"prompt": q, "completion": a} for q, a in _pairs(n, seed)]


def explicit_preferences(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """TRL's standard preference rows: strings."""
    return [
        {
            "prompt": r["prompt_messages"][-1]["content"],
            "chosen": r["chosen_messages"][-1]["content"],
            "rejected": r["rejected_messages"][-1]["content"],
        }
        for r in synthetic_preferences(n, seed=seed)
    ]


def implicit_preferences(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """UltraFeedback-binarized rows: a string prompt, whole chosen/rejected conversations."""
    return [
        {
            "prompt": r["prompt_messages"][-1]["content"],
            "chosen": r["prompt_messages"] + r["chosen_messages"],
            "rejected": r["prompt_messages"] + r["rejected_messages"],
            "score_chosen": 8.0,
            "score_rejected": 2.0,
        }
        for r in synthetic_preferences(n, seed=seed)
    ]


def kto(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """TRL's unpaired rows, alternating desirable and undesirable."""
    rows = []
    for i, r in enumerate(synthetic_preferences(n, seed=seed)):
        key = "chosen_messages" if i % 2 == 0 else "rejected_messages"
        rows.append(
            {
                "prompt": r["prompt_messages"][-1]["content"],
                "completion": r[key][-1]["content"],
                "label": i % 2 == 0,
            }
        )
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    """JSONL, or Parquet for a ``.parquet`` path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dataset_repository(folder: Path, subsets: dict[str, dict[str, list[dict[str, Any]]]]) -> Path:
    """A dataset repository as the Hub holds one: a README card whose ``configs`` name each
    subset's ``data/<subset>/<split>-*.parquet`` files.

    Args:
        folder: Where to write it.
        subsets: Subset name -> split -> rows (the first subset is the default).
    """
    card = ["---", "configs:"]
    for i, (subset, splits) in enumerate(subsets.items()):
        card += [f"- config_name: {subset}", "  data_files:"]
        if i == 0:
            card.insert(len(card) - 1, "  default: true")
        for split, rows in splits.items():
            write_rows(folder / "data" / subset / f"{split}-00000-of-00001.parquet", rows)
            card += [f"  - split: {split}", f"    path: data/{subset}/{split}-*.parquet"]
    card += ["---", "", "# A test dataset", ""]
    (folder / "README.md").write_text("\n".join(card))
    return folder


def fill_hub_cache(repo: Path, hub_id: str, cache: Path) -> None:
    """Put ``repo`` into the datasets cache ``cache`` as ``load_dataset(hub_id)`` would have left
    it after an online load (the cache a later offline load reads).

    ``datasets`` must already read ``cache`` (``datasets.config.HF_DATASETS_CACHE``).
    """
    import datasets

    local = cache.parent / "staging" / hub_id.split("/")[-1]
    shutil.copytree(repo, local)
    for subset in yaml_subsets(repo):
        datasets.load_dataset(str(local), name=subset)
    built = cache / local.name
    built.rename(cache / "___".join(hub_id.split("/")))


def yaml_subsets(repo: Path) -> list[str]:
    import yaml

    card = (repo / "README.md").read_text().split("---")[1]
    return [c["config_name"] for c in yaml.safe_load(card)["configs"]]
