"""Run parameters refuse typos everywhere a user passes them: the models themselves, Prefect's own
validation (what `prefect deployment run --param`, the UI's form and schedules go through) and the CLI."""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError
from pydantic import BaseModel, ValidationError

from flows.monitor import monitor_drift
from flows.pipeline import main as pipeline_main
from flows.pipeline import train_and_deploy
from ops.config_reference import RUN_PARAMETERS as MODELS  # every run-parameter model the docs list
from tasks.params import ContainerParams, GateThresholds

# A misspelling of a real field of each flow parameter of train_and_deploy.
TYPOS = {
    "data": {"train_limt": 5},
    "train": {"epoch": 3},
    "thresholds": {"min_acuracy": 1},
    "container": {"deploi": False},
    "trigger": {"knd": "drift"},
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_parameter_model_refuses_an_unknown_field_and_names_the_valid_ones(model: type[BaseModel]):
    with pytest.raises(ValidationError) as refused:
        model.model_validate({"no_such_field": 1})
    message = str(refused.value)
    assert "no_such_field" in message
    assert all(name in message for name in model.model_fields), message


@pytest.mark.parametrize("section", sorted(TYPOS))
def test_prefect_refuses_a_misspelt_deployment_parameter(section):
    """What a deployment run, a schedule or the UI's form hands the flow: refused before it runs."""
    (typo,) = TYPOS[section]
    with pytest.raises(ParameterTypeError, match=rf"{section}.*unknown field\(s\) {typo}; valid: "):
        train_and_deploy.validate_parameters({section: TYPOS[section]})


def test_nested_and_monitor_parameters_are_refused_too():
    with pytest.raises(ParameterTypeError, match=r"unknown field\(s\) dens1; valid: conv1_filters"):
        train_and_deploy.validate_parameters({"train": {"architecture": {"dens1": 64}}})
    with pytest.raises(ParameterTypeError, match=r"unknown field\(s\) class_pis"):
        monitor_drift.validate_parameters({"thresholds": {"class_pis": 0.3}})


def test_a_correct_partial_section_keeps_every_other_default(monkeypatch):
    monkeypatch.setenv("MLOPS_MIN_CLASS_RECALL", "0.4")  # the gate policy's environment names still apply
    validated = train_and_deploy.validate_parameters(
        {"thresholds": {"min_accuracy": 0.5}, "container": {"deploy": False}}
    )
    assert validated["container"] == ContainerParams(deploy=False)
    assert validated["thresholds"] == GateThresholds(min_accuracy=0.5, min_class_recall=0.4)
    assert validated["thresholds"].max_regression == GateThresholds.model_fields["max_regression"].default


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--container", '{"deploi": false}'], 'Unknown field "deploi"'),
        (["--container.deploi", "false"], "Did you mean --container.deploy"),
        (["--thresholds", '{"min_acuracy": 1}'], 'Unknown field "min_acuracy"'),
        (["--data.train-limt", "5"], "Unknown option: --data.train-limt"),
    ],
)
def test_the_command_line_refuses_typos_before_anything_runs(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        pipeline_main(argv)
    assert stopped.value.code != 0
    assert said in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("serving", "said"),
    [
        ({"workerz": "4"}, "not server settings: ['workerz']"),
        ({"port": "9000"}, "['port'] are set by the release itself"),
        ({"prediction_log_dir": "/tmp"}, "set by the release itself"),
        ({"workers": "four"}, "serving.workers"),
        ({"max_image_pixels": "10"}, "greater than or equal to 784"),
    ],
)
def test_server_settings_baked_into_the_image_are_the_servers_own_and_valid(serving, said):
    with pytest.raises(ValidationError) as refused:
        ContainerParams(serving=serving)
    assert said in str(refused.value)


def test_the_command_line_refuses_a_server_setting_that_is_not_one(capsys):
    with pytest.raises(SystemExit) as stopped:
        pipeline_main(["--container.serving", '{"workerz": "4"}'])
    assert stopped.value.code != 0
    assert "not server settings: ['workerz']" in " ".join(capsys.readouterr().err.split())
