"""Every run parameter of every flow is a flag its console script takes: for each field of each flow's
parameters (nested models included), a valid value other than the default goes through the real command
line parser and comes out as that value. A field type the parser hands over as text that the model then
refuses (a choice of numbers was one) fails here, not in a user's terminal."""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from flows import monitor, pipeline, rollback, tune

APPS = {
    "clothes-pipeline": pipeline.app,
    "clothes-monitor": monitor.app,
    "clothes-rollback": rollback.app,
    "clothes-tune": tune.app,
}
FLOWS = {
    "clothes-pipeline": pipeline.train_and_deploy,
    "clothes-monitor": monitor.monitor_drift,
    "clothes-rollback": rollback.rollback,
    "clothes-tune": tune.tune,
}


def _unwrapped(kind: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` as X."""
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [a for a in typing.get_args(kind) if a is not type(None)]
    return kind


def _bounds(metadata: list[Any]) -> tuple[float, float]:
    low, high = float("-inf"), float("inf")
    for bound in metadata:
        if isinstance(bound, annotated_types.Ge | annotated_types.Gt):
            low = float(bound.ge if isinstance(bound, annotated_types.Ge) else bound.gt)  # type: ignore[arg-type]
        if isinstance(bound, annotated_types.Le | annotated_types.Lt):
            high = float(bound.le if isinstance(bound, annotated_types.Le) else bound.lt)  # type: ignore[arg-type]
    return low, high


def other_value(kind: Any, default: Any, metadata: list[Any]) -> Any:
    """A valid value of `kind` that is not `default`."""
    kind = _unwrapped(kind)
    origin = typing.get_origin(kind)
    low, high = _bounds(metadata)
    if origin is typing.Literal:
        return next(v for v in typing.get_args(kind) if v != default)
    if origin is list:
        return [other_value(typing.get_args(kind)[0], None, [])]
    if origin is dict:  # slice -> accuracy, or server setting -> value
        return {"catalogue": 0.5} if typing.get_args(kind)[1] is float else {"workers": "3"}
    if kind is bool:
        return not default
    if kind is int:
        return next(v for v in (int(default or 0) + 1, int(max(low, 0)), 3) if low <= v <= high and v != default)
    if kind is float:
        middle = (max(low, 0.0) + min(high, 1.0)) / 2
        return next(v for v in (middle, middle / 2) if low < v < high and v != default)
    if kind is str:
        return "a-name"
    if kind is Path:
        return Path("some/folder")
    raise AssertionError(f"no sample value for {kind}: add one so that its flag is tested")


def words(option: str, value: Any) -> list[str]:
    """What a user types: `--x`/`--no-x` for a switch (`--a.b.no-x` nested), repeated options for a list."""
    if value is True:
        return [option]
    if value is False:
        head, _, last = option[2:].rpartition(".")
        return [f"--{head}.no-{last}" if head else f"--no-{last}"]
    if isinstance(value, list):
        return [word for item in value for word in (option, str(item))]
    return [option, json.dumps(value) if isinstance(value, dict) else str(value)]


def field_cases(option: str, kind: Any, field: FieldInfo) -> list[tuple[str, Any]]:
    inner = _unwrapped(kind)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return [
            case
            for name, sub in inner.model_fields.items()
            for case in field_cases(f"{option}.{name.replace('_', '-')}", sub.annotation, sub)
        ]
    default = None if field.default_factory else field.default
    return [(option, other_value(kind, default, list(field.metadata)))]


def flow_cases(flow: Any) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(flow.fn, include_extras=True)
    cases = []
    for name, parameter in inspect.signature(flow.fn).parameters.items():
        kind = hints[name]
        extras = typing.get_args(kind)[1:] if typing.get_origin(kind) is typing.Annotated else ()
        field = next((e for e in extras if isinstance(e, FieldInfo)), FieldInfo())
        field.default = parameter.default
        cases += field_cases(f"--{name.replace('_', '-')}", kind, field)
    return cases


CASES = [(script, option, value) for script, flow in FLOWS.items() for option, value in flow_cases(flow)]


@pytest.mark.parametrize(("script", "option", "value"), CASES, ids=[f"{s} {o}" for s, o, _ in CASES])
def test_every_parameter_is_a_flag_the_command_line_takes(script, option, value):
    typed = words(option, value)
    _command, bound, _unused = APPS[script].parse_args(typed, exit_on_error=False, print_error=False)
    parsed: Any = bound.arguments
    for part in option[2:].split("."):
        key = part.replace("-", "_")
        parsed = parsed[key] if isinstance(parsed, dict) else getattr(parsed, key)
    assert parsed == value, typed


def test_a_flag_that_takes_no_value_refuses_a_stray_word_instead_of_misreading_it(capsys):
    """`--container.enabled false` once handed "false" to the first parameter (the data source)."""
    with pytest.raises(SystemExit):
        pipeline.main(["--container.enabled", "false"])
    assert "Unused Tokens" in capsys.readouterr().err
