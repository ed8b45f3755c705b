"""The tree is the map: layers only point down, and no module imports itself back through others.

    embedfit (the ground floor: types, errors, settings, atomic, outputs, jsonl, progress, procs, runcli)
      < embed < metrics < data < retrieval < store < adapters < pipeline < search < report < evaluation, app
      (evaluation and app never import each other) < embedfit.cli < scripts

Reads every import statement of every module (those inside functions too) with `ast`, so it stays true
as code is added. The oracle is the layer order above, written here and in the package's docstring, not derived
from the code.
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "embedfit"
#: each sub-package's rank; the ground floor's modules (embedfit.<module>) are 0, the one command above every layer
LAYERS = {"embed": 1, "metrics": 2, "data": 3, "retrieval": 4, "store": 5, "adapters": 6, "pipeline": 7,
          "search": 8, "report": 9, "evaluation": 10, "app": 10, "cli": 11, "__main__": 12}
SCRIPTS = 13


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    mods.update({module_name(p): p for p in (REPO / "scripts").rglob("*.py")})
    return mods


def layer_of(module: str) -> tuple[int, str]:
    """(rank, layer name) of a module: `embedfit.store.store` -> (5, "store"), `embedfit.atomic` -> (0, "")."""
    parts = module.split(".")
    if parts[0] == "scripts":
        return SCRIPTS, "scripts"
    if len(parts) == 1:
        return 0, ""
    if parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    return 0, ""  # a ground-floor module


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
        out.update(n for n in names if n.split(".")[0] in ("embedfit", "scripts"))
    return out


def test_every_import_points_down_or_sideways_within_its_layer():
    modules = project_modules()
    wrong = []
    for name, path in modules.items():
        rank, layer = layer_of(name)
        for imported in imports_of(path, modules):
            if imported == "embedfit":  # the package itself: only its version and docstring
                continue
            other_rank, other_layer = layer_of(imported)
            if other_layer == layer:
                continue
            if other_rank >= rank:
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


def test_every_layer_is_a_folder_and_nothing_is_left_outside_the_package():
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == \
        {name for name in LAYERS if name not in ("cli", "__main__")}
    for old in ("core", "ingest", "adapter", "search", "eval", "app"):  # the seven top-level packages before
        assert not (REPO / old).exists(), old


def test_the_checker_sees_a_wrong_direction(tmp_path):
    """The oracle works: a made-up ground-floor module importing the app is found, and ranked above it."""
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from embedfit.app.ui import build_demo\n", encoding="utf-8")
    assert imports_of(fake, project_modules()) == {"embedfit.app.ui"}
    assert layer_of("embedfit.app.ui")[0] > layer_of("embedfit.atomic")[0]
    assert layer_of("embedfit.store.store")[0] > layer_of("embedfit.retrieval.lexical")[0]
