"""A snapshot of each method's library config fields, so validation needs no torch.

``hf_fields.json`` beside this module records, for every init field of each method's library
config (``config/methods.py``: transformers' ``TrainingArguments`` for SFT, TRL's ``DPOConfig``,
``KTOConfig``, ``ORPOConfig``, ``CPOConfig``): the JSON kinds its value may take,
its default, and its allowed values where the library defines them. A test rebuilds the snapshot
from the installed libraries and fails when they drift; regenerate it with
``python -m finetuning.config.hf_fields``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

SNAPSHOT_PATH = Path(__file__).with_name("hf_fields.json")

_KIND_OF = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict"}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """What a training_args field accepts.

    Attributes:
        kinds: JSON kinds the value may be ("bool", "int", "float", "str", "list", "dict",
            "null"); empty means anything.
        default: The library's default, JSON-encoded where possible.
        choices: Allowed string values, when the library defines them.
    """

    kinds: tuple[str, ...]
    default: Any
    choices: tuple[str, ...] = ()


@cache
def fields_for(method: str) -> dict[str, FieldSpec]:
    """The snapshot of training_args fields for ``"sft"`` or ``"dpo"``."""
    raw = json.loads(SNAPSHOT_PATH.read_text())[method]
    return {
        name: FieldSpec(tuple(spec["kinds"]), spec["default"], tuple(spec.get("choices", ())))
        for name, spec in raw.items()
    }


def _kinds_and_choices(annotation: Any) -> tuple[set[str], list[str]]:
    kinds: set[str] = set()
    choices: list[str] = []
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            sub_kinds, sub_choices = _kinds_and_choices(arg)
            kinds |= sub_kinds
            choices += sub_choices
    elif origin is typing.Literal:
        for value in typing.get_args(annotation):
            kinds.add("null" if value is None else _KIND_OF.get(type(value), "str"))
    elif annotation is type(None) or annotation is None:
        kinds.add("null")
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        kinds.add("str")
        choices += [str(m.value) for m in annotation]
    elif origin in (list, dict):
        kinds.add(_KIND_OF[origin])
    elif annotation in _KIND_OF:
        kinds.add(_KIND_OF[annotation])
    else:
        kinds.add("any")
    return kinds, choices


def _jsonable_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return None
    if isinstance(value, enum.Enum):
        return value.value
    try:
        json.dumps(value)
    except TypeError:
        return repr(value)
    return value


def _snapshot_of(cls: type) -> dict[str, dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    out: dict[str, dict[str, Any]] = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        kinds, choices = _kinds_and_choices(hints[field.name])
        if "choices" in field.metadata:
            choices = [str(c) for c in field.metadata["choices"]]
        if field.name == "loss_type" and "choices" not in field.metadata:
            # DPOConfig lists the loss types only in the help text
            choices = re.findall(r"`'(\w+)'`", field.metadata.get("help", ""))
            kinds.add("str")  # a single loss type may be given as a string
        spec: dict[str, Any] = {
            "kinds": [] if "any" in kinds else sorted(kinds),
            "default": _jsonable_default(field),
        }
        if choices and "any" not in kinds:
            spec["choices"] = sorted(set(choices))
        out[field.name] = spec
    return out


def build_snapshot() -> dict[str, dict[str, dict[str, Any]]]:
    """Introspect the installed transformers and TRL (imports torch): every method's config."""
    import importlib

    from finetuning.config.methods import METHODS

    snapshot = {}
    for name, method in METHODS.items():
        module, cls = method.library_config.split(":")
        snapshot[name] = _snapshot_of(getattr(importlib.import_module(module), cls))
    return snapshot


if __name__ == "__main__":
    SNAPSHOT_PATH.write_text(json.dumps(build_snapshot(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT_PATH}")
