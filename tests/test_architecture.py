"""The package layering, checked on the source: an import graph of every project module (ast, so
function-local imports count too) has no cycle and respects who may import whom."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "modalities", "evals", "experiments", "app")
TOP_MODULES = ("run",)

# layer -> prefixes it must never import (a prefix matches the module and its submodules)
FORBIDDEN = {
    "core": ("modalities", "evals", "experiments", "app", "run"),
    "evals": ("core.trainer", "experiments", "app", "run", "modalities"),
    "modalities": ("evals", "experiments", "app", "run"),
    "app": ("experiments", "run"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + [REPO / f"{m}.py" for m in TOP_MODULES]
    return {module_name(p): p for p in files}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports anywhere in its file (``from a import b`` -> ``a.b`` if a module)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` where a.b.c is an attribute: its module
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_import_graph_sees_local_and_relative_imports():
    g = graph()
    assert "app.repa_encoders" in g and "evals.inception" in g["app.repa_encoders"]  # function-local import
    assert "experiments.aggregate" in g["experiments.report"]  # relative import
    assert "app.tasks" in g["run"]


def test_no_import_cycles():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_rules(layer):
    bad = [(m, t) for m, targets in graph().items() if m == layer or m.startswith(layer + ".")
           for t in targets if any(t == f or t.startswith(f + ".") for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} must not import {FORBIDDEN[layer]}: {bad}"
