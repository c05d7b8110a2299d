"""docs/configuration.md, generated from the settings' and run parameters' own `Field(description=...)`,
so the reference cannot drift from the code: `make docs` writes it, and a test fails when the committed
page differs from what this prints (`python -m ops.config_reference > docs/configuration.md`)."""

from __future__ import annotations

import sys
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from serving.settings import ServingSettings
from tasks.params import (
    Architecture,
    ContainerParams,
    DataSpec,
    GateThresholds,
    MonitorThresholds,
    ReleaseParams,
    SearchSpace,
    TrainParams,
    Trigger,
)
from tasks.settings import Settings

# Read straight from the environment, outside any settings object.
OTHER_VARIABLES = {
    "CLOTHES_URL": "`clothes-classify`'s default endpoint (`http://127.0.0.1:8080/models/clothes/latest`)",
    "CLOTHES_STACK_DIR": "where `clothes-stack` keeps its state, logs and pid files (`.stack/`)",
    "MLFLOW_TRACKING_URI": "MLflow's own variable; used when `MLOPS_TRACKING_URI` is unset",
    "PREFECT_API_URL": "a Prefect server for the flows; unset: a temporary local one per run",
    "PYTEST_ARGS": "extra pytest arguments for `make test` and `make test-fast`",
    "ARGS": 'options for `make run`, `make tune` and `make bench-photos` (e.g. `ARGS="--train.epochs 3"`)',
    "MLOPS_TEST_WITHOUT_<NAME>": "=1 skips the tests that need DATA, DOCKER, ROOT, ENGINE_RESTART, SWARM, POSTGRES "
    "or CHROMIUM (`tests/conftest.py`); without it a missing requirement fails the test",
}
RUN_PARAMETERS = (
    DataSpec,
    TrainParams,
    Architecture,
    GateThresholds,
    ContainerParams,
    ReleaseParams,
    Trigger,
    MonitorThresholds,
    SearchSpace,
)


def default_of(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(see below)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    return code(str(value)) if value not in (None, "") else "unset"


def cell(text: str) -> str:
    """Prose in a table cell: one line, HTML-safe."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Code in a table cell (a pipe would end the cell: `int or None` reads as well as `int | None`)."""
    return f"`{' '.join(text.split()).replace(' | ', ' or ')}`"


def type_name(annotation: Any) -> str:
    """As a user writes it, the same on every Python: classes by their own name (3.13's `Path` lives in
    `pathlib._local`), a validator's wrapping left out, the two-valued choice as `bool`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if annotation == Literal[False, True]:
        return "bool"
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (Union, UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def summary(model: type) -> str:
    """The first paragraph of a class's docstring, on one line."""
    return " ".join((model.__doc__ or "").split("\n\n")[0].split())


def settings_rows(model: type[BaseSettings]) -> list[str]:
    prefix = model.model_config.get("env_prefix", "")
    return [
        f"| `{prefix}{name.upper()}` | {default_of(field)} | {cell(field.description or '')} |"
        for name, field in model.model_fields.items()
        if not (isinstance(field.default_factory, type) and issubclass(field.default_factory, BaseModel))
    ]


def parameter_rows(model: type[BaseModel]) -> list[str]:
    return [
        f"| `{name}` | {code(type_name(field.annotation))} | {default_of(field)} | {cell(field.description or '')} |"
        for name, field in model.model_fields.items()
    ]


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from the code by `python -m ops.config_reference` (`make docs`); a test fails when this page",
        "and the code disagree. Settings come from the environment; run parameters are what a flow run varies",
        "(`clothes-pipeline --help`, `prefect deployment run ... --param`, the Prefect UI's form).",
        "",
        "## Pipeline settings (`tasks/settings.py`)",
        "",
    ]
    settings = Settings()
    names = ("tracking", "release", "deploy", "stack", "monitor", "search")
    groups = [("", Settings)] + [(name, type(getattr(settings, name))) for name in names]
    for name, model in groups:
        rows = settings_rows(model)
        if rows:
            title = f"`settings.{name}`" if name else "top level"
            lines += [
                f"### {title}",
                "",
                summary(model),
                "",
                "| variable | default | meaning |",
                "| --- | --- | --- |",
                *rows,
                "",
            ]
    lines += [
        "The gate policy's environment names are `GateThresholds`' fields below, prefixed `MLOPS_`",
        "(`MLOPS_MIN_ACCURACY`, `MLOPS_MIN_SLICE_ACCURACY` as JSON, ...).",
        "",
        "## Server settings (`serving/settings.py`)",
        "",
        summary(ServingSettings),
        "",
        "| variable | default | meaning |",
        "| --- | --- | --- |",
        *settings_rows(ServingSettings),
        "",
        "## Run parameters (`tasks/params.py`)",
        "",
    ]
    for model in RUN_PARAMETERS:
        where = " (`train.architecture`: `--train.architecture.<field>`)" if model is Architecture else ""
        lines += [
            f"### `{model.__name__}`{where}",
            "",
            summary(model),
            "",
            "| field | type | default | meaning |",
            "| --- | --- | --- | --- |",
            *parameter_rows(model),
            "",
        ]
    lines += [
        "## Other environment variables",
        "",
        "| variable | meaning |",
        "| --- | --- |",
        *[f"| `{k}` | {cell(v)} |" for k, v in OTHER_VARIABLES.items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
