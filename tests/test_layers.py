"""The import direction between the package's layers, read from the source with ``ast``.

``cli`` may import everything; ``train`` builds on ``config``, ``data``, ``model`` and
``tracking``; ``data`` and ``model`` on ``config`` only; ``tools`` on ``model``, ``data`` and
``config``; ``config`` on ``errors`` only; nothing imports ``cli``. Every import counts, also the
ones inside functions (they are deferred, not absent), so the layers stay free of circles.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "finetuning"

#: The layers below everything: importable from any layer, importing (almost) nothing.
BASE = {"errors", "version"}

#: layer -> the layers it may import (besides itself and BASE).
ALLOWED: dict[str, set[str]] = {
    "cli": {"config", "data", "model", "train", "tracking", "tools", "console", "testing"},
    "__main__": {"cli"},
    "train": {"config", "data", "model", "tracking"},
    "tracking": {"config"},
    "tools": {"model", "data", "config", "console", "testing"},
    "data": {"config"},
    "model": {"config"},
    "config": set(),
    "console": set(),
    "testing": set(),
    "errors": set(),
    "version": set(),
}

#: Leaf modules that every layer may import although they live in another one: they import
#: nothing of the package but BASE (checked below). The one atomic write is such a leaf.
SHARED_LEAVES = {"finetuning.train.safety.writes"}


def layer_of(module: str) -> str:
    """``finetuning.train.stages`` -> "train"; ``finetuning`` (the version) -> "version"."""
    parts = module.split(".")
    assert parts[0] == "finetuning", module
    return parts[1] if len(parts) > 1 else "version"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported finetuning module) for every import in ``path``, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("finetuning")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "finetuning":  # `from finetuning import __version__` or a package
                for alias in node.names:
                    sub = PACKAGE / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    found.append(
                        (node.lineno, f"finetuning.{alias.name}" if is_module else "finetuning")
                    )
            elif node.module.startswith("finetuning."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: use absolute imports")
    return found


def layer_edges() -> dict[tuple[str, str], list[str]]:
    """(from layer, to layer) -> where in the source each such import is."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer_of(module_name(path))
        for line, target in imports_of(path):
            dest = layer_of(target)
            if dest != source and target not in SHARED_LEAVES:
                edges.setdefault((source, dest), []).append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
                )
    return edges


def find_cycle(edges) -> list[str] | None:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_layer_is_known():
    layers = {layer_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), f"add the new layer(s) to ALLOWED: {layers - set(ALLOWED)}"


def test_imports_follow_the_layer_direction():
    wrong = [
        where
        for (source, dest), places in layer_edges().items()
        if dest not in ALLOWED[source] | BASE
        for where in places
    ]
    assert not wrong, "imports against the layer direction:\n" + "\n".join(wrong)


def test_shared_leaves_import_only_the_base():
    for leaf in sorted(SHARED_LEAVES):
        path = PACKAGE.parent / (leaf.replace(".", "/") + ".py")
        imported = {layer_of(target) for _, target in imports_of(path)}
        assert imported <= BASE, f"{leaf} imports {imported - BASE}: it is no leaf any more"


def test_no_package_level_cycle():
    cycle = find_cycle(layer_edges())
    assert cycle is None, "layers import each other in a circle: " + " -> ".join(cycle or [])


def test_the_checker_sees_a_cycle_and_a_nested_import(tmp_path):
    assert find_cycle({("data", "model"): [], ("model", "data"): []}) == ["data", "model", "data"]
    assert find_cycle({("train", "data"): [], ("data", "config"): []}) is None
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from finetuning.cli import main\n")
    assert imports_of(module) == [(2, "finetuning.cli")]


#: Inside ``train``: the run machinery (``safety``) and the reporting never import a method or
#: the plan, and the shared modules at the top of ``train`` (the plan, the stages) reach a
#: method only through its plan hook (``methods.hooks``), never by importing a recipe; the
#: evaluation part of the plan (``methods.eval_plan``, every method's ``eval_conf``) is no recipe.
PLAN_PARTS = {"finetuning.train.methods.hooks", "finetuning.train.methods.eval_plan"}
TRAIN_FOLDERS = ("methods", "safety", "reporting")


def train_part(module: str) -> str:
    """``finetuning.train.safety.lock`` -> "safety"; ``finetuning.train.plan`` -> "plan"."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 else "train"


def test_train_folders_keep_methods_apart_from_run_machinery():
    wrong = []
    for path in sorted((PACKAGE / "train").rglob("*.py")):
        source = module_name(path)
        part = train_part(source)
        for line, target in imports_of(path):
            if layer_of(target) != "train" or train_part(target) == part:
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if part in ("safety", "reporting") and train_part(target) in ("methods", "plan"):
                wrong.append(where)
            recipe = train_part(target) == "methods" and target not in PLAN_PARTS
            if part not in TRAIN_FOLDERS and recipe:
                wrong.append(where)
    assert not wrong, "train/ imports across its folders' direction:\n" + "\n".join(wrong)


def test_every_method_recipe_and_plan_hook_lives_in_methods():
    from finetuning.config.methods import METHODS

    for method in METHODS.values():
        for module in filter(None, (method.recipe, method.plan)):
            assert module.startswith("finetuning.train.methods."), module
            path = PACKAGE.parent / (module.replace(".", "/") + ".py")
            assert path.is_file(), path
