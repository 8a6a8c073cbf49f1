"""The layers, read from the code's own imports: kernels/ is a leaf, and nothing imports upwards.

Layers, bottom to top: kernels -> library (engines, optimizer, AUX, noise, data, models) -> run
protocol (training) -> experiments. A module may import only from its own layer or below.
"""

from __future__ import annotations

import ast

import pytest

from conftest import REPO

LAYERS = {"kernels": 0, "library": 1, "training": 2, "experiments": 3}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts[:2] == ["cdr_fast", "kernels"] or parts[0] == "kernels":
        return LAYERS["kernels"]
    if len(parts) > 1 and parts[1] in ("training", "experiments"):
        return LAYERS[parts[1]]
    return LAYERS["library"]


def module_name(path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["cdr_fast", *parts]
    return ".".join(p for p in parts if p != "__init__")


def imported(path) -> list[str]:
    """Absolute names of the cdr_fast modules that ``path`` imports (relative imports resolved)."""
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n.split(".")[0] == "cdr_fast"]


SOURCES = sorted([*REPO.glob("kernels/*.py"), *REPO.glob("cdr_fast/**/*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_upward_imports(path):
    mine = layer_of(module_name(path))
    for name in imported(path):
        assert layer_of(name) <= mine, f"{module_name(path)} imports {name}, a layer above it"


def test_kernels_import_nothing_from_the_library():
    for path in REPO.glob("kernels/*.py"):
        assert all(layer_of(n) == LAYERS["kernels"] for n in imported(path)), path
    assert SOURCES, "no sources found"


def test_no_import_cycles():
    """No module reaches itself through imports (type-checking imports included: a cycle hidden
    behind TYPE_CHECKING is still two rooms that need each other)."""
    modules = {module_name(path): path for path in SOURCES}

    def resolve(name: str) -> str | None:  # "from .x import f" may name a function of module x
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: {r for n in imported(p) if (r := resolve(n)) and r != m} for m, p in modules.items()}
    # A package's __init__ importing its own submodules is its face, not a cycle.
    graph = {m: {r for r in deps if not r.startswith(m + ".")} for m, deps in graph.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for dep in sorted(graph[m]):
            visit(dep, path + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])
