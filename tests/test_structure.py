"""The code's shape: layers that only import downwards, stages in the order a run goes through them, no
import cycle, a ground floor every stage stands on, flows that compose stages rather than reach into files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("serving", "tasks", "flows", "ops")
# What each layer may import from the project (serving is the image: nothing of the pipeline).
ALLOWED = {
    "serving": {"serving"},
    "tasks": {"serving", "tasks"},
    "flows": {"serving", "tasks", "flows"},
    "ops": {"serving", "tasks", "ops"},
}
# `artifact_store` is an MLflow plugin, loaded while `import mlflow` runs: outside the stages that import mlflow.
# The ground floor every stage stands on: what each of its modules may import (of the project).
GROUND_FLOOR = {
    "tasks.params": {"serving.settings"},  # `container.serving` is checked against the server's own settings
    "tasks.settings": {"tasks.params"},
    "tasks.artifact_store": {"tasks.settings"},
    "tasks.network": set(),
    "tasks.load_generator": set(),
    "tasks.run_owner": set(),
    "tasks.events": set(),
    "tasks.tracking": {"tasks.params", "tasks.settings", "tasks.artifact_store", "tasks.network", "tasks.run_owner"},
}
# The lifecycle in the order a run goes through it: a stage may import the ground floor and the stages
# before it, never one after it.
STAGES = ("data", "training", "evaluation", "registry", "release", "monitoring")
MAX_PIPELINE_IMPORTS = 9
# serving/'s rooms from the ground up: a module may import its own room and those below it. The data
# plane knows no HTTP (it raises domain errors, `serving.errors`); the protocols stand on the HTTP edge.
SERVING_ROOMS = (
    {"serving.version", "serving.errors", "serving.settings", "serving.metrics", "serving.preprocessing"},
    {"serving.models", "serving.log", "serving.mirror"},
    {"serving.data_plane"},
    {"serving.http"},
    {"serving.protocols"},
    {"serving.app"},
    {"serving", "serving.server", "serving.__main__", "serving.healthcheck", "serving.client"},
)  # four stages, three ground-floor modules, its CLI and the release subflow


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


SOURCES = {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def project_imports() -> dict[str, set[str]]:
    """module -> project modules it imports, at any depth of its code (lazy imports count too)."""
    graph: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from serving import metrics` imports the submodule serving.metrics
                names = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in SOURCES else node.module
                    for a in node.names
                ]
            imported |= {n for n in names if n.split(".")[0] in PACKAGES}
        graph[module] = imported
    return graph


GRAPH = project_imports()


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 1 and parts[1] in STAGES else None


def test_every_stage_is_a_package_and_nothing_else_sits_in_tasks():
    loose = {m for m in SOURCES if m.startswith("tasks.") and m.count(".") == 1 and stage_of(m) is None}
    assert loose == set(GROUND_FLOOR), "a module of tasks/ belongs to a stage package"
    assert {m for m in SOURCES if m.count(".") == 1 and stage_of(m)} == {f"tasks.{s}" for s in STAGES}


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


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if stage_of(m)))
def test_stages_import_only_earlier_stages(module):
    own = STAGES.index(stage_of(module))  # type: ignore[arg-type]
    later = {m for m in GRAPH[module] if stage_of(m) and STAGES.index(stage_of(m)) > own}  # type: ignore[arg-type]
    assert not later, f"{module} reaches forward into {sorted(later)}; stage order: {' < '.join(STAGES)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("flows.")))
def test_flows_import_stages_not_their_files(module):
    files = {m for m in GRAPH[module] if stage_of(m) and m.count(".") > 1}
    assert not files, f"{module} imports stage internals {sorted(files)}: import from the stage package"


def serving_room(module: str) -> int:
    room = ".".join(module.split(".")[:2])
    return next(i for i, names in enumerate(SERVING_ROOMS) if room in names)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("serving")))
def test_serving_rooms_import_only_downwards(module):
    above = {m for m in GRAPH[module] if serving_room(m) > serving_room(module)}
    assert not above, f"{module} reaches up into {sorted(above)}"


def test_the_pipeline_reads_as_a_short_list_of_stages():
    assert len(GRAPH["flows.pipeline"]) <= MAX_PIPELINE_IMPORTS, sorted(GRAPH["flows.pipeline"])


@pytest.mark.parametrize("path", sorted(SOURCES.values()), ids=str)
def test_every_module_says_what_its_job_is(path):
    tree = ast.parse(path.read_text())
    if tree.body:  # empty __init__ files have nothing to say
        assert ast.get_docstring(tree), f"{path}: a module docstring saying its one job"
