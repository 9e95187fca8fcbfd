"""Loading a YAML config into an experiment config, reporting every problem at once."""

from __future__ import annotations

import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from finetuning.config.experiment import CONFIG_CLASSES, ExperimentConfig, TrainingArgsError
from finetuning.config.methods import METHODS
from finetuning.config.paths import (
    FOLDER_FIELDS,
    expand_home,
    is_by_name,
    not_a_folder,
    path_values,
    unexpanded_variable,
)
from finetuning.config.training_args import training_args_defaults, translate_legacy
from finetuning.config.yaml_source import dotted, read_yaml
from finetuning.errors import Problem, UserError, did_you_mean


@dataclass
class LoadedConfig:
    """A validated config and what loading it had to say.

    Attributes:
        config: The validated, frozen experiment config.
        notes: Warnings and mappings to log once at run start (legacy fields, data_type, ...).
        path: The file it came from, if any.
    """

    config: ExperimentConfig
    notes: list[str] = field(default_factory=list)
    path: Path | None = None


def load_config(path: str | Path, method: str | None) -> LoadedConfig:
    """Load and validate ``path`` as a config for ``method`` (a name in ``METHODS``).

    Args:
        path: The YAML file.
        method: The subcommand's method; None takes the config's ``method`` (default "sft").

    Raises:
        UserError: Listing every problem, each with its config path and line.
    """
    path = Path(path)
    data, root = read_yaml(path)
    if method is None:
        method = data.get("method", "sft") if isinstance(data, dict) else "sft"
        if method not in CONFIG_CLASSES:
            allowed = ", ".join(CONFIG_CLASSES)
            raise UserError(
                Problem(
                    f"{method!r} is not allowed (allowed: {allowed})",
                    f"{path}: method",
                    did_you_mean(str(method), list(CONFIG_CLASSES)),
                )
            )
    return load_config_dict(data, method, path=path, root=root)


def resolved_dict(config: ExperimentConfig) -> dict[str, Any]:
    """The config with every default filled in (training_args: the library's defaults too)."""
    data = config.model_dump(mode="json")
    data["training_args"] = {**training_args_defaults(config.method), **config.training_args}
    return data


def load_config_dict(
    data: Any, method: str, path: Path | None = None, root: yaml.Node | None = None
) -> LoadedConfig:
    """Validate an already-parsed config (see :func:`load_config`)."""
    name = str(path) if path else "config"
    if not isinstance(data, dict):
        raise UserError(
            f"{name}: the config must be a mapping of sections, got {type(data).__name__}"
        )
    given_method = data.get("method", method)
    if given_method != method:
        raise UserError(
            Problem(
                f"the config says method: {given_method!r} but the command is {method!r}: "
                f"run `finetuning {given_method} ...` or change `method`",
                _where(name, root, ["method"]),
            )
        )
    data = expand_home(dict(data))
    path_problems = [
        Problem(message, _where(name, root, parts))
        for parts, value in path_values(data)
        if (message := unexpanded_variable(value))
        or (tuple(parts) in FOLDER_FIELDS and (message := not_a_folder(value)))
    ]
    if path_problems:
        # Every problem at once: a data file that is missing too is named in the same report
        # (the data's other checks run in the plan, which also reports them together).
        path_problems += [
            Problem(f"data file not found: {value}", _where(name, root, parts))
            for parts, value in path_values(data)
            if parts[0] == "data_conf"
            and parts[-1] == "path"
            and not os.path.exists(value)
            and not unexpanded_variable(value)
            and not is_by_name(value)  # a Hub dataset id: the plan reads (or refuses) it
        ]
        raise UserError(path_problems, header=f"{name} names paths that cannot be used:")
    notes = _normalise_data_types(data, method)
    if isinstance(data.get("training_args"), dict):
        notes += translate_legacy(data["training_args"], method)[1]
    try:
        config = CONFIG_CLASSES[method].model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, data, CONFIG_CLASSES[method], name, root)
        raise UserError(problems, header=f"{name} is not a valid {method} config:") from None
    return LoadedConfig(config, notes, path)


def validate_file_data(
    model: type[BaseModel], data: Any, path: Path, root: yaml.Node | None, what: str
) -> Any:
    """Validate data read from ``path`` as ``model`` (e.g. a generate config), errors located.

    Raises:
        UserError: Listing every problem, each with its key path and line, as for a training config.
    """
    if not isinstance(data, dict):
        raise UserError(
            f"{path}: a {what} must be a mapping of sections, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _problems(exc, data, model, str(path), root)
        raise UserError(problems, header=f"{path} is not a valid {what}:") from None


def _normalise_data_types(data: dict[str, Any], method: str) -> list[str]:
    """Set every data input's ``data_type`` to the method's, warning when the user said otherwise."""
    notes = []
    data_conf = data.get("data_conf")
    if not isinstance(data_conf, dict):
        return notes
    data["data_conf"] = data_conf = dict(data_conf)
    for key in ("training_data", "validation_data"):
        section = data_conf.get(key)
        if not isinstance(section, dict):
            continue
        given = section.get("data_type")
        if given is not None and given != METHODS[method].data_type:
            notes.append(
                f"data_conf.{key}.data_type: {given!r} overwritten with {METHODS[method].data_type!r} "
                f"(set by the method {method!r})"
            )
        data_conf[key] = {**section, "data_type": METHODS[method].data_type}
    return notes


def _problems(
    exc: ValidationError, data: Any, model: type[BaseModel], name: str, root: yaml.Node | None
) -> list[Problem]:
    problems: list[Problem] = []
    for error in exc.errors():
        loc = list(error["loc"])
        inner = error.get("ctx", {}).get("error")
        if isinstance(inner, TrainingArgsError):
            for p in inner.problems:
                key_path = p.where.split(".", 1)  # training_args.<key>; a key may hold dots
                problems.append(Problem(p.message, _where(name, root, key_path), p.hint))
            continue
        parts = _strip_tags(loc, data)
        problems.append(_problem(error, parts, loc, model, name, root))
    return problems


def _problem(
    error: dict, parts: list, loc: list, model: type[BaseModel], name: str, root: yaml.Node | None
) -> Problem:
    kind = error["type"]
    ctx = error.get("ctx", {})
    where = _where(name, root, parts)
    value = error.get("input")
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        return Problem(
            "Additional properties are not allowed: unknown key",
            where,
            did_you_mean(str(parts[-1]), known),
        )
    if kind == "none_required":
        method = getattr(model.model_fields.get("method"), "default", "this method")
        return Problem(f"must be absent or null for {method} (sft_args only applies to sft)", where)
    if kind == "missing":
        return Problem("required key is missing", where)
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']+)'", ctx.get("expected_tags", ""))
        return Problem(
            f"{ctx.get('tag')!r} is not allowed (allowed: {', '.join(tags)})",
            _where(name, root, [*parts, ctx.get("discriminator", "").strip("'")]),
            did_you_mean(str(ctx.get("tag")), tags),
        )
    if kind == "union_tag_not_found":
        return Problem(f"needs the key {ctx.get('discriminator')}", where)
    if kind in ("enum", "literal_error"):
        allowed = re.findall(r"'([^']+)'", ctx.get("expected", ""))
        return Problem(
            f"{value!r} is not allowed (allowed: {', '.join(allowed)})",
            where,
            did_you_mean(str(value), allowed),
        )
    message = error["msg"].removeprefix("Value error, ")
    if kind not in ("value_error", "assertion_error"):
        message = f"{message}, got {value!r}"
    return Problem(message, where)


_TAG_KEYS = ("type", "peft_type", "quantization_type")


def _strip_tags(loc: list, data: Any) -> list:
    """Drop the union tags pydantic inserts into error locations, keeping the user's keys."""
    parts: list = []
    node = data
    for part in loc:
        if (
            isinstance(node, dict)
            and part not in node
            and any(node.get(k) == part for k in _TAG_KEYS)
        ):
            continue
        if isinstance(node, dict | list) and isinstance(part, str | int):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
        else:
            node = None
        parts.append(part)
    return parts


def _fields_at(model: type[BaseModel], loc: list) -> list[str]:
    """Field names of the model found at ``loc`` (tags included), for "did you mean"."""
    annotation: Any = model
    for part in loc:
        annotation = _descend(annotation, part)
        if annotation is None:
            return []
    models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
    return [name for m in models for name in m.model_fields]


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _descend(annotation: Any, part: Any) -> Any:
    members = _members(annotation)
    for member in members:
        origin = typing.get_origin(member)
        if origin is list and isinstance(part, int):
            return typing.get_args(member)[0]
        if isinstance(member, type) and issubclass(member, BaseModel):
            if part in member.model_fields:
                return member.model_fields[part].annotation
            for f in member.model_fields.values():
                if typing.get_origin(f.annotation) is typing.Literal and part in [
                    str(a) for a in typing.get_args(f.annotation)
                ]:
                    return member
    return None


def _where(name: str, root: yaml.Node | None, parts: list) -> str:
    path = dotted(parts)
    if root is None:  # not from a file: the config path alone
        return path or name
    line = _line_of(root, parts)
    prefix = f"{name}:{line}" if line else name
    return f"{prefix}: {path}" if path else prefix


def _line_of(root: yaml.Node | None, parts: list) -> int | None:
    node = root
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    line, node = key.start_mark.line + 1, value
                    break
            else:
                return line or node.start_mark.line + 1
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
