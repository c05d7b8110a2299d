"""The stack as users run it: real Prefect server + worker + MLflow server, deployments from prefect.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow import MlflowClient

from ops.stack import Stack, deploy, down, main, up
from tasks.docker_engine import free_port

pytestmark = pytest.mark.slow


def _api(stack: Stack, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{stack.prefect_api}{path}", data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _scheduled_start_times(stack: Stack, deployment_id: str) -> list[str]:
    runs = _api(stack, "/flow_runs/filter", {
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "deployments": {"id": {"any_": [deployment_id]}},
    })  # fmt: skip
    return sorted(r["expected_start_time"] for r in runs)


@pytest.fixture
def stack(tmp_path, monkeypatch, fashion_dir):
    for key, value in {
        "MLOPS_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "MLOPS_MODEL_ROOT": str(tmp_path / "models"),
        "MLOPS_DATA_DIR": str(fashion_dir),
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",  # recreate scheduled runs quickly after redeploy
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stack = Stack(tmp_path / "stack", prefect_port=free_port(), mlflow_port=free_port())
    try:
        up(stack)
        yield stack
    finally:
        down(stack)
        assert all(stack.running_pid(name) is None for name in stack.commands())


def test_deployment_runs_on_the_worker_and_redeploy_keeps_one_schedule(stack):
    deployment = _api(stack, "/deployments/name/train-and-deploy/weekly")
    assert [(s["slug"], s["schedule"]["cron"]) for s in deployment["schedules"]] == [("weekly-retrain", "0 3 * * 1")]
    assert _api(stack, "/deployments/name/rollback/rollback")["work_pool_name"] == "clothes-process"

    params = {
        "data": '{"train_limit": 2000, "test_limit": 500}',
        "train": '{"epochs": 1, "learning_rate": 0.001}',
        "thresholds": '{"min_accuracy": 0.3, "min_class_recall": 0, "max_regression": 0.5}',
        "container": '{"enabled": false}',
    }
    command = [sys.executable, "-m", "prefect", "deployment", "run", "train-and-deploy/weekly", "--watch",
               "--watch-timeout", "400", *[a for k, v in params.items() for a in ("--param", f"{k}={v}")]]  # fmt: skip
    result = subprocess.run(command, env=stack.env(), capture_output=True, text=True, timeout=450)
    finished = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0 and finished.endswith("in 'Completed'."), (
        result.stdout[-3000:] + result.stderr[-2000:]
    )

    mlflow_server = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)
    version = mlflow_server.get_model_version("clothes", "1")
    assert "challenger" in version.aliases and version.tags["param.epochs"] == "1"
    assert os.path.isfile(os.path.join(os.environ["MLOPS_MODEL_ROOT"], "clothes", "1", "model.tflite"))

    before = _scheduled_start_times(stack, deployment["id"])
    assert before and len(before) == len(set(before))
    deploy(stack)  # what `clothes-stack up` or `prefect deploy --all` does again
    redeployed = _api(stack, "/deployments/name/train-and-deploy/weekly")
    assert redeployed["id"] == deployment["id"] and len(redeployed["schedules"]) == 1
    deadline = time.monotonic() + 60  # the scheduler replaces the runs of a redeployed schedule
    while len(after := _scheduled_start_times(stack, deployment["id"])) < len(before) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(5)  # a few more scheduler loops: a duplicating schedule would add runs now
    after = _scheduled_start_times(stack, deployment["id"])
    assert after == before


def test_status_of_a_stopped_stack_is_a_state_not_an_error(tmp_path, capsys):
    assert main(["status", "--state-dir", str(tmp_path)]) == 0
    assert "stack stopped" in capsys.readouterr().out
