"""The tree is the map: layers only point down, and no module imports itself back through others.

    core < ingest < adapter < search < eval, app (eval and app never import each other) < scripts

Reads every import statement of every module (those inside functions too) with `ast`, so it stays true
as code is added. The oracle is the layer order above, written here and in the README's stages section, not derived from the code.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

LAYERS = {"core": 0, "ingest": 1, "adapter": 2, "search": 3, "eval": 4, "app": 4, "scripts": 5}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in (REPO / layer).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (a `from pkg import name` counts `pkg.name` when that is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                     for a in node.names]
        else:
            continue
        out.update(n for n in names if n.split(".")[0] in LAYERS)
    return out


def test_every_import_points_down_or_sideways_within_its_layer():
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        top = name.split(".")[0]
        for imported in imports_of(path, modules):
            other = imported.split(".")[0]
            if other == top:
                continue
            if LAYERS[other] > LAYERS[top] or (LAYERS[other] == LAYERS[top]):
                wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_the_module_graph_has_no_cycle():
    modules = project_modules()
    graph = {name: {m for m in imports_of(path, modules) if m in modules and m != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checker_sees_a_wrong_direction(tmp_path):
    """The oracle works: a made-up core module importing the app is found."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from app.ui import build_demo\n", encoding="utf-8")
    assert imports_of(fake, project_modules()) == {"app.ui"}
