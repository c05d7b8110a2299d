"""Retried tasks that write are safe to repeat: a retry after a partial success finds what the failed
attempt did and reuses it (one version, one alias move, one retraining run)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from tasks.data import Dataset
from tasks.monitoring import DriftReport, retrain_task
from tasks.params import ModelRef, MonitorThresholds
from tasks.registry import register_task
from tasks.registry.policy import promote_version
from tasks.settings import Settings
from tasks.tracking import CHALLENGER, CHAMPION, configure_mlflow, tracked_run
from tasks.training.train import build_lenet5

pytestmark = pytest.mark.slow


def fail_once_after(monkeypatch, owner, method: str) -> list[str]:
    """`owner.method` does its work, then raises the first time: a write that landed before a failure."""
    original, calls = getattr(owner, method), []

    def flaky(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(method)
        if len(calls) == 1:
            raise ConnectionError(f"lost the connection right after {method}")
        return result

    monkeypatch.setattr(owner, method, flaky)
    return calls


def test_register_model_retried_after_the_version_was_made_registers_one_version(
    prefect_harness, mlflow_store, monkeypatch
):
    settings = Settings()
    experiment_id = configure_mlflow(settings)
    pixels = np.zeros((4, 28, 28), np.uint8)
    dataset = Dataset(pixels, np.arange(4) % 10, pixels, np.arange(4) % 10)
    card = {
        "run_id": "",
        "git_commit": "x",
        "trigger": {"kind": "manual"},
        "gates": [],
        "train": {},
        "test": {"accuracy": 0.9, "macro_f1": 0.9},
        "data": {"digest": "d", "train_examples": 4},
    }
    # The version is created, then the alias move fails: the retry must not make a second version.
    calls = fail_once_after(monkeypatch, MlflowClient, "set_registered_model_alias")
    with tracked_run(experiment_id, "retried-registration") as run_id:
        ref = register_task(run_id, build_lenet5(), dataset, "clothes", {**card, "run_id": run_id})
    client = MlflowClient()
    versions = client.search_model_versions("name = 'clothes'")
    assert calls == ["set_registered_model_alias"] * 2
    assert ref == ModelRef("clothes", 1)
    assert [str(v.version) for v in versions] == ["1"]
    assert versions[0].run_id == run_id
    assert {k: str(v) for k, v in client.get_registered_model("clothes").aliases.items()} == {CHALLENGER: "1"}
    experiment = client.get_run(run_id).info.experiment_id
    logged = mlflow.search_logged_models(
        [experiment], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    assert len(logged) == 1, "the retry reuses the model the first attempt logged"

    # Promotion retried after the alias moved reports the true previous champion and moves it once.
    client.create_model_version("clothes", source=versions[0].source, run_id=run_id)
    promote_version(ModelRef("clothes", 1), {"image": "a"})
    assert promote_version(ModelRef("clothes", 2), {"image": "b"}) == ModelRef("clothes", 1)
    assert promote_version(ModelRef("clothes", 2), {"image": "b"}) == ModelRef("clothes", 1)
    assert client.get_model_version("clothes", "2").tags["previous_champion"] == "1"
    assert str(client.get_registered_model("clothes").aliases[CHAMPION]) == "2"


@flow(name="retrain-target")
def retrain_target(trigger: dict | None = None, data: dict | None = None) -> None:
    """Stands in for train-and-deploy: nobody runs it, the test counts its flow runs."""


def test_start_retraining_retried_after_the_run_was_created_starts_one_retrain(
    prefect_harness, mlflow_store, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLOPS_RETRAIN_DEPLOYMENT", "retrain-target/on-drift")
    monkeypatch.setenv("MLOPS_FEEDBACK_DATA_DIR", str(tmp_path / "feedback"))
    settings = Settings()
    deployment_id = retrain_target.to_deployment("on-drift").apply()
    experiment_id = configure_mlflow(settings)
    with tracked_run(experiment_id, "drift-check") as check_run_id:
        pass
    # The flow run is created, then recording it on the check fails: the retry must find that run.
    calls = fail_once_after(monkeypatch, MlflowClient, "set_tag")
    window = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))
    report = DriftReport(600, 0, reasons=["input mean: KS 0.6"])
    labelled = [
        {"type": "prediction", "time": 1.0, "id": "a" * 32, "pixels": base64.b64encode(bytes(784)).decode()},
        {"type": "feedback", "time": 2.0, "id": "a" * 32, "true_class_id": 3},
    ]  # something new to learn from: a labelled input
    ref = ModelRef("clothes", 1)
    triggered = retrain_task(ref, labelled, report, window, check_run_id, settings, MonitorThresholds())

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    assert calls == ["set_tag", "set_tag"]
    assert len(runs) == 1
    assert triggered == f"retrain-target/on-drift flow run {runs[0].id}"
    assert runs[0].parameters["trigger"]["kind"] == "drift"
    assert "trigger:drift" in runs[0].tags
    assert MlflowClient().get_run(check_run_id).data.tags["retraining"] == triggered
