"""The code's shape: layers that only import downwards, no import cycle, settings as the ground floor."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "tasks", "flows", "ops")
# What each layer may import from the project (serving is the image: nothing of the pipeline).
ALLOWED = {"serving": {"serving"}, "tasks": {"serving", "tasks"}, "flows": {"serving", "tasks", "flows"},
           "ops": {"tasks", "ops"}}  # fmt: skip
GROUND_FLOOR = {"tasks.params": set(), "tasks.settings": {"tasks.params"}}


MODULES = {f"{p.parent.name}.{p.stem}" for package in PACKAGES for p in (REPO / package).glob("*.py")}


def project_imports() -> dict[str, set[str]]:
    """module -> project modules it imports, at any depth of its code (lazy imports count too)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            module = f"{package}.{path.stem}".removesuffix(".__init__")
            imported = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # `from serving import metrics` imports the submodule serving.metrics
                    names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                             for a in node.names]  # fmt: skip
                imported |= {n for n in names if n.split(".")[0] in PACKAGES}
            graph[module] = imported
    return graph


GRAPH = project_imports()


def test_no_import_cycle():
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for target in GRAPH.get(module, ()):
            visit(target, [*path, module])
        done.add(module)

    for module in GRAPH:
        visit(module, [])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_layers_import_only_downwards(module):
    layer = module.split(".")[0]
    assert {m.split(".")[0] for m in GRAPH[module]} <= ALLOWED[layer]
    if module in GROUND_FLOOR:
        assert GRAPH[module] <= GROUND_FLOOR[module]


@pytest.mark.parametrize("path", sorted(p for d in ("tasks", "serving") for p in (REPO / d).glob("*.py")), ids=str)
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 250, "split it by job"
