"""`monitor_drift`: compare a window of served traffic with the champion's training reference, record
the verdict in MLflow, and start the retraining deployment when the traffic drifted."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.cli import console_script, flow_app
from tasks.monitoring import (
    DriftReport,
    champion_task,
    detect_drift_task,
    read_labelled_task,
    read_window_task,
    record_check_task,
    retrain_task,
    verdict,
    window_until,
)
from tasks.params import ModelRef, MonitorThresholds
from tasks.release import capture_store
from tasks.settings import Settings


@flow(name="monitor-drift", log_prints=True)
def monitor_drift(
    window_minutes: int = 60,
    model_name: str | None = None,
    log_dir: Path | None = None,
    thresholds: MonitorThresholds | None = None,
    retrain: bool = True,
) -> dict:
    """Judge the last `window_minutes` of the champion's served traffic; retrain when it drifted.

    Parameters
    ----------
    window_minutes
        How much of the prediction log to judge, ending now.
    model_name
        Unset: MLOPS_MODEL_NAME ('clothes').
    log_dir
        This machine's prediction log directory (what capture has not shipped yet, or all of it without
        MLOPS_CAPTURE_URL); unset: MLOPS_PREDICTION_LOG_DIR.
    thresholds
        When a signal counts as drift.
    retrain
        Start the retraining deployment on drift (else only report).
    """
    settings = Settings()
    thresholds = thresholds or MonitorThresholds()
    window = window_until(window_minutes)
    since, until = window[0].timestamp(), window[1].timestamp()
    log_dir, store = log_dir or settings.monitor.prediction_log_dir, capture_store(settings)
    ref, reference, estimator = champion_task(model_name or settings.tracking.model_name, settings)
    summary = read_window_task(log_dir, store, ref, since, until, len(reference["class_names"]))
    report = detect_drift_task(reference, summary, thresholds, estimator)
    run_id = record_check_task(ref, window, report, reference, summary, thresholds, settings)
    triggered = None
    if report.drifted and retrain:
        labelled = read_labelled_task(log_dir, store, summary, since, until) if summary else []
        triggered = retrain_task(ref, labelled, report, window, run_id, settings, thresholds)
    create_table_artifact(
        [{"metric": key, "value": float(f"{value:.4g}")} for key, value in sorted(report.metrics.items())],
        key="drift-check",
        description=check_description(ref, report, window, triggered),
    )
    return {
        **report.as_dict(),
        "model": ref.name,
        "version": str(ref.version),
        "mlflow_run_id": run_id,
        "retraining": triggered,
    }


def check_description(
    ref: ModelRef, report: DriftReport, window: tuple[datetime, datetime], triggered: str | None
) -> str:
    reasons = "; ".join(report.reasons) or "none"
    estimated = accuracy_text(report.metrics)
    return (
        f"Drift check for {ref}: {verdict(report)}. Window {window[0]:%Y-%m-%d %H:%M} to {window[1]:%H:%M} UTC: "
        f"{report.n_predictions} predictions, {report.n_feedback} feedback records. {estimated}Reasons: {reasons}. "
        f"Retraining: {triggered or 'not started (no new labelled data: the drift is raised as an event)'}."
    )


def accuracy_text(m: dict[str, float]) -> str:
    """The estimated accuracy, and beside it the one measured on feedback where labels exist."""
    if "estimated_accuracy" not in m:
        return ""
    text = (
        f"Estimated accuracy without labels: {m['estimated_accuracy']:.3f} "
        f"[{m['estimated_accuracy_low']:.3f}, {m['estimated_accuracy_high']:.3f}]"
    )
    if "labelled" in m:
        text += f"; measured on {m['labelled']:.0f} labelled predictions: {m['online_accuracy']:.3f}"
    return text + ". "


app = flow_app(monitor_drift, "clothes-monitor")
main = console_script(app)

if __name__ == "__main__":
    sys.exit(main())
