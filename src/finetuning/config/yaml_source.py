"""Reading a YAML config strictly: what PyYAML accepts but a config must not contain.

PyYAML keeps the last of two equal keys (a second ``training_args:`` block silently drops the
first), reads ``yes:`` as the boolean key ``True``, and recurses once per nesting level while
composing (a deeply nested file is a ``RecursionError``). Each of these is reported here as a
located user error, before any value is validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from finetuning.errors import Problem, UserError

#: Deepest nesting of mappings and sequences a config may have (configs use fewer than 10).
MAX_DEPTH = 100

#: Sections whose mappings may have numeric keys (``max_memory: {0: 20GiB}``, ``device_map``).
NUMERIC_KEYS_UNDER = ("run_conf", "model_args")

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_KIND = {
    "tag:yaml.org,2002:bool": "the boolean",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:int": "the number",
    "tag:yaml.org,2002:float": "the number",
    "tag:yaml.org,2002:timestamp": "the date",
    "tag:yaml.org,2002:binary": "binary data",
}


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Read a YAML file into data plus its node tree (for line numbers).

    Raises:
        UserError: The file is missing, unreadable or not valid YAML (with line and column), is
            nested too deeply, or has duplicate keys or keys that are not names (each with its
            line and config path).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {path}: {exc}") from None
    try:
        _check_depth(text, path)
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            problems = key_problems(root, str(path))
            if problems:
                raise UserError(problems, header=f"{path} has keys that cannot be read as meant:")
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(Problem(f"invalid YAML: {problem}", where)) from None
    return data, root


def _check_depth(text: str, path: Path) -> None:
    """Reject nesting deeper than :data:`MAX_DEPTH`, from the event stream (which never recurses)."""
    line = _deep_brackets_line(text)
    if line is not None:
        raise UserError(Problem(_TOO_DEEP, f"{path}:{line}"))
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(Problem(_TOO_DEEP, f"{path}:{event.start_mark.line + 1}"))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


_TOO_DEEP = (
    f"nested more than {MAX_DEPTH} levels deep: a config is a few levels of sections and keys "
    "(is a bracket or an indentation runaway?)"
)


def _deep_brackets_line(text: str) -> int | None:
    """The line where ``[``/``{`` nesting passes :data:`MAX_DEPTH`, skipping quotes and comments.

    PyYAML's scanner looks ahead to the matching bracket before it yields the first token of a
    flow collection, in time quadratic in the nesting, so deep brackets are caught on the text.
    """
    depth, line, quote = 0, 1, ""
    previous = "\n"
    for char in text:
        if char == "\n":
            line += 1
            if quote == "#":
                quote = ""
        elif quote:
            if char == quote and quote != "#":
                quote = ""
        elif char in "'\"" or (char == "#" and previous in " \t\n"):
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif char in "]}":
            depth = max(depth - 1, 0)
        previous = char
    return None


def dotted(parts: list[Any]) -> str:
    """``data_conf.training_data.datasets[0].path`` from its parts."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def key_problems(root: yaml.Node | None, name: str) -> list[Problem]:
    """Duplicate keys (with both lines) and keys YAML reads as non-names, at any depth."""
    found: list[tuple[int, Problem]] = []
    constructor = SafeConstructor()
    stack: list[tuple[yaml.Node, list[Any]]] = [(root, [])] if root is not None else []
    seen_nodes: set[int] = set()  # an alias repeats a node; walk it once
    while stack:
        node, parts = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, [*parts, i]) for i, item in enumerate(node.value)]
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                stack.append((value_node, parts))
                continue
            key, problem = _key(key_node, constructor, parts)
            if problem:
                found.append((line, Problem(problem, _located(name, line, parts))))
                continue
            if key in first_line:
                message = (
                    f"duplicate key `{key}` (first at line {first_line[key]}, again at line "
                    f"{line}): YAML would keep only the last one; remove or merge one of them"
                )
                found.append((line, Problem(message, _located(name, line, [*parts, key]))))
                continue
            first_line[key] = line
            stack.append((value_node, [*parts, key]))
    return [problem for _, problem in sorted(found, key=lambda item: item[0])]


def _key(node: yaml.Node, constructor: SafeConstructor, parts: list[Any]) -> tuple[Any, str]:
    """(the key's value, "") or (None, what is wrong with it)."""
    if not isinstance(node, yaml.ScalarNode):
        return None, "a key must be a name, not a list or mapping"
    if node.tag == _STR:
        return node.value, ""
    try:
        value = constructor.construct_object(node)
    except yaml.YAMLError:
        value = node.value
    if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and _numeric_ok(parts):
        return value, ""
    kind = _KIND.get(node.tag, f"a value of type {node.tag.rsplit(':', 1)[-1]}")
    shown = node.value or "(empty)"
    if value is not None:
        kind += " " + (str(value).lower() if isinstance(value, bool) else repr(value))
    return None, (
        f"the key `{shown}` is read by YAML as {kind}, not as a name: "
        f"quote it ('{node.value}':) if a name was meant"
    )


def _numeric_ok(parts: list[Any]) -> bool:
    return tuple(parts[: len(NUMERIC_KEYS_UNDER)]) == NUMERIC_KEYS_UNDER


def _located(name: str, line: int, parts: list[Any]) -> str:
    path = dotted(parts)
    return f"{name}:{line}: {path}" if path else f"{name}:{line}"
