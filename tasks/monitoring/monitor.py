"""The monitor's stages: read a window of served traffic (`tasks.monitoring.window`: every node's minute
summaries), judge it against the champion's reference (`tasks.monitoring.drift`), record the verdict in
MLflow, and start retraining with the labelled inputs feedback collected."""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
from mlflow import MlflowClient
from PIL import Image
from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from serving.log.object_store import ObjectStore
from serving.log.reader import first_labels
from serving.log.records import Record
from serving.log.summary import TrafficSummary
from tasks.evaluation.estimate import EstimatorStats, load_estimator
from tasks.evaluation.reference import REFERENCE_ARTIFACT
from tasks.events import DRIFT_DETECTED, emit
from tasks.monitoring.drift import DriftReport, judge, plot_distributions
from tasks.monitoring.window import labelled_records, read_summary
from tasks.params import ModelRef, MonitorThresholds, Trigger
from tasks.settings import Settings, mlflow_ui_link
from tasks.tracking import champion_version, configure_mlflow, ensure_experiment, tracked_run

RETRIES: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [2, 10], "cache_policy": NO_CACHE}


def labelled_samples(records: Iterable[Record], max_samples: int = 1000) -> list[tuple[str, np.ndarray, int]]:
    """(id, 28x28 uint8 pixels, true class) for feedback on a logged prediction that stored its input:
    the first label per id, at most `max_samples` per window, so a flood of feedback cannot outweigh
    the training set. A prediction flagged out of distribution is left out unless a person reviewed its
    label: a client confirming whatever the model said about a photo of a cat must not teach it cats
    are bags."""
    records = list(records)
    predictions = {r["id"]: r for r in records if r["type"] == "prediction" and "pixels" in r}
    reviewed = {r["id"] for r in records if r["type"] == "feedback" and r.get("reviewed")}
    samples = [
        (record_id, np.frombuffer(base64.b64decode(predictions[record_id]["pixels"]), np.uint8).reshape(28, 28), label)
        for record_id, label in first_labels(records).items()
        if record_id in predictions and (predictions[record_id].get("in_distribution", True) or record_id in reviewed)
    ]
    return samples[:max_samples]


def save_labelled_samples(records: list[Record], root: Path, max_samples: int) -> Path | None:
    """Feedback with stored inputs becomes training data: root/<class_id>/<prediction id>.png."""
    samples = labelled_samples(records, max_samples)
    if not samples:
        return None
    for record_id, pixels, class_id in samples:
        (root / str(class_id)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / str(class_id) / f"{record_id}.png")
    return root


@task(name="find-champion", **RETRIES)
def champion_task(name: str, settings: Settings) -> tuple[ModelRef, dict, EstimatorStats | None]:
    """The served champion, the reference its training run saved and its accuracy estimators'
    statistics (None for runs before 0.4.0)."""
    configure_mlflow(settings)
    champion = champion_version(name)
    if champion is None:
        raise RuntimeError(f"model '{name}' has no champion: nothing is served, nothing to monitor")
    reference = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{REFERENCE_ARTIFACT}")
    estimator = load_estimator(champion.run_id)
    if estimator is None:
        get_run_logger().warning("%s v%s has no accuracy estimators (trained before 0.4.0)", name, champion.version)
    return ModelRef(name, int(champion.version)), reference, estimator


@task(name="read-traffic-summaries", **RETRIES)
def read_window_task(
    log_dir: Path, store: ObjectStore | None, ref: ModelRef, since: float, until: float, classes: int
) -> TrafficSummary | None:
    summary = read_summary(log_dir, store, ref, since, until, classes)
    where = f"{store.url} and {log_dir}" if store else str(log_dir)
    found = summary.n if summary else 0
    get_run_logger().info("%d predictions of %s in the window's summaries (%s)", found, ref, where)
    return summary


@task(name="read-labelled-inputs", **RETRIES)
def read_labelled_task(
    log_dir: Path, store: ObjectStore | None, summary: TrafficSummary, since: float, until: float
) -> list[Record]:
    return labelled_records(log_dir, store, summary, since, until)


@task(name="detect-drift", cache_policy=NO_CACHE)
def detect_drift_task(
    reference: dict, summary: TrafficSummary | None, thresholds: MonitorThresholds, estimator: EstimatorStats | None
) -> DriftReport:
    report = judge(reference, summary, thresholds, estimator)
    get_run_logger().info("window verdict: %s", verdict(report))
    return report


DRIFT_EVENT = DRIFT_DETECTED


@task(name="start-retraining", **RETRIES)
def retrain_task(
    ref: ModelRef,
    records: list[Record],
    report: DriftReport,
    window: tuple[datetime, datetime],
    check_run_id: str,
    settings: Settings,
    thresholds: MonitorThresholds,
) -> str | None:
    """The retraining deployment, with the window's labelled inputs added to its training split and a
    `drift` trigger naming the window, the signals and the drift check's MLflow run (which in turn
    names the retraining flow run). Safe to retry: the samples go to a directory named after the check,
    and the flow run is created with the check as its idempotency key, so a retry after a partial success
    finds the same run instead of starting a second retrain."""
    extra = save_labelled_samples(
        records, settings.monitor.feedback_data_dir.resolve() / check_run_id, thresholds.max_feedback_samples
    )
    if extra is None:  # the same data would train the same model again: raise the drift for people instead
        raise_drift(ref, report, window, check_run_id, retraining=None)
        MlflowClient().set_tag(check_run_id, "retraining", "not started: no new labelled data to learn from")
        get_run_logger().warning(
            "drift (%s) with no new labelled data: raised as event %s, not retrained",
            "; ".join(report.reasons),
            DRIFT_EVENT,
        )
        return None
    check = MlflowClient().get_run(check_run_id)
    trigger = Trigger(
        kind="drift",
        window=f"{window[0].isoformat(timespec='seconds')}/{window[1].isoformat(timespec='seconds')}",
        signals=report.reasons,
        monitoring_run=mlflow_ui_link(
            settings.tracking.mlflow_ui_url, f"experiments/{check.info.experiment_id}/runs/{check_run_id}"
        ),
        source_run=str(runtime.flow_run.id or ""),
    )
    parameters: dict[str, Any] = {"trigger": trigger.model_dump()}
    if extra:
        parameters["data"] = {"extra_path": str(extra)}
    flow_run = cast(
        FlowRun,
        run_deployment(
            settings.monitor.retrain_deployment,
            parameters=parameters,
            timeout=0,
            tags=["trigger:drift"],
            idempotency_key=f"retrain-after-drift-check-{check_run_id}",
        ),
    )
    triggered = f"{settings.monitor.retrain_deployment} flow run {flow_run.id}"
    raise_drift(ref, report, window, check_run_id, retraining=triggered)
    MlflowClient().set_tag(check_run_id, "retraining", triggered)
    get_run_logger().warning("drift (%s): started %s", "; ".join(report.reasons), triggered)
    return triggered


@task(name="record-drift-check", **RETRIES)
def record_check_task(
    ref: ModelRef,
    window: tuple[datetime, datetime],
    report: DriftReport,
    reference: dict,
    summary: TrafficSummary | None,
    thresholds: MonitorThresholds,
    settings: Settings,
) -> str:
    """One run per check in the `<experiment>-monitoring` experiment, so each signal plots over time.
    MLflow was configured (and its server checked) by `champion_task`."""
    experiment_id = ensure_experiment(settings, f"{settings.tracking.experiment_name}-monitoring", "monitoring")
    minutes = round((window[1] - window[0]).total_seconds() / 60)
    with tracked_run(experiment_id, f"{ref.name}-v{ref.version}-{window[1]:%Y%m%dT%H%M}") as run_id:
        mlflow.log_params(
            {"model": ref.name, "version": ref.version, "window_minutes": minutes, **thresholds.model_dump()}
        )
        mlflow.log_metrics({"n_predictions": report.n_predictions, "n_feedback": report.n_feedback, **report.metrics})
        mlflow.set_tags(
            {
                "drift": str(report.drifted).lower(),
                "enough_data": str(report.enough_data).lower(),
                "verdict": verdict(report),
                "reasons": "; ".join(report.reasons)[:5000],
            }
        )
        if report.enough_data and summary is not None:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(plot_distributions(reference, summary, Path(tmp) / "drift.png")), "plots")
    return run_id


def raise_drift(
    ref: ModelRef, report: DriftReport, window: tuple[datetime, datetime], check_run_id: str, retraining: str | None
) -> None:
    """A Prefect event a person or an automation can act on (`make up` sends it to MLOPS_NOTIFY_WEBHOOK)."""
    action = f"retraining: {retraining}" if retraining else "not retrained: no new labelled data"
    emit(
        DRIFT_EVENT,
        ref.name,
        f"{ref}: drift in {window[0]:%Y-%m-%d %H:%M}-{window[1]:%H:%M} UTC ({'; '.join(report.reasons)}); {action}",
        version=ref.version,
        signals=report.reasons,
        window=[w.isoformat() for w in window],
        mlflow_run=check_run_id,
        retraining=retraining,
    )


def verdict(report: DriftReport) -> str:
    return "DRIFT" if report.drifted else ("not enough traffic" if not report.enough_data else "no drift")


def window_until(minutes: int, now: float | None = None) -> tuple[datetime, datetime]:
    until = time.time() if now is None else now
    return datetime.fromtimestamp(until - minutes * 60, UTC), datetime.fromtimestamp(until, UTC)
