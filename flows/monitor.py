"""`monitor_drift`: compare a window of served traffic with the champion's training reference, record
the verdict in MLflow, and start the retraining deployment when the traffic drifted."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
from PIL import Image
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.deployments import run_deployment

from flows.cli import run_and_report
from tasks.monitoring import (
    MonitorThresholds,
    detect_drift,
    labelled_samples,
    load_reference,
    plot_distributions,
    read_records,
)
from tasks.registry import champion_version, configure_mlflow, ensure_experiment
from tasks.settings import Settings


def save_labelled_samples(records: list[dict], root: Path, max_samples: int) -> Path | None:
    """Feedback with stored inputs becomes training data: root/<class_id>/<prediction id>.png."""
    samples = labelled_samples(records, max_samples)
    if not samples:
        return None
    for record_id, pixels, class_id in samples:
        (root / str(class_id)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / str(class_id) / f"{record_id}.png")
    return root


def _markdown(name: str, version: str, report, window: tuple[datetime, datetime], triggered: str | None) -> str:
    verdict = "DRIFT" if report.drifted else ("not enough traffic" if not report.enough_data else "no drift")
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in sorted(report.metrics.items()))
    reasons = "\n".join(f"- {r}" for r in report.reasons) or "- none"
    return (
        f"## Drift check for {name} v{version}: {verdict}\n\n"
        f"Window {window[0]:%Y-%m-%d %H:%M} to {window[1]:%H:%M} UTC: {report.n_predictions} predictions, "
        f"{report.n_feedback} feedback records.\n\n**Reasons**\n{reasons}\n\n"
        f"Retraining: {triggered or 'not started'}\n\n| metric | value |\n|---|---|\n{rows}\n"
    )


@flow(name="monitor-drift", log_prints=True)
def monitor_drift(
    window_minutes: int = 60,
    model_name: str | None = None,
    log_dir: Path | None = None,
    thresholds: MonitorThresholds | None = None,
    retrain: bool = True,
) -> dict:
    settings = Settings()
    logger = get_run_logger()
    name = model_name or settings.model_name
    thresholds = thresholds or MonitorThresholds()
    configure_mlflow(settings)
    champion = champion_version(name)
    if champion is None:
        raise RuntimeError(f"model '{name}' has no champion: nothing is served, nothing to monitor")
    version = str(champion.version)
    reference = load_reference(champion.run_id)
    until = time.time()
    since = until - window_minutes * 60
    records = [
        r for r in read_records(log_dir or settings.prediction_log_dir, since, until)
        if r.get("model") == name and str(r.get("version")) == version
    ]  # fmt: skip
    report = detect_drift(reference, records, thresholds)
    window = (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))

    triggered = None
    if report.drifted and retrain:
        extra = save_labelled_samples(
            records, settings.feedback_data_dir.resolve() / f"{int(until)}", thresholds.max_feedback_samples
        )
        parameters = {"data": {"extra_path": str(extra)}} if extra else {}
        flow_run = run_deployment(settings.retrain_deployment, parameters=parameters, timeout=0)
        triggered = f"{settings.retrain_deployment} flow run {flow_run.id}"
        logger.warning("drift (%s): started %s", "; ".join(report.reasons), triggered)
    else:
        logger.info("window verdict: %s", "drift" if report.drifted else "no drift")

    experiment_id = ensure_experiment(settings, f"{settings.experiment_name}-monitoring", "monitoring")
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}-v{version}-{window[1]:%Y%m%dT%H%M}"):
        mlflow.log_params({"model": name, "version": version, "window_minutes": window_minutes,
                           **thresholds.model_dump()})  # fmt: skip
        mlflow.log_metrics({"n_predictions": report.n_predictions, "n_feedback": report.n_feedback, **report.metrics})
        mlflow.set_tags({"drift": str(report.drifted).lower(), "enough_data": str(report.enough_data).lower(),
                         "reasons": "; ".join(report.reasons)[:5000], "retraining": triggered or ""})  # fmt: skip
        if report.enough_data:
            with tempfile.TemporaryDirectory() as tmp:
                mlflow.log_artifact(str(plot_distributions(reference, records, Path(tmp) / "drift.png")), "plots")
        monitoring_run_id = mlflow.active_run().info.run_id
    create_markdown_artifact(key="drift-check", markdown=_markdown(name, version, report, window, triggered))
    return {**report.as_dict(), "model": name, "version": version, "mlflow_run_id": monitoring_run_id,
            "retraining": triggered}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clothes-monitor", description=monitor_drift.__doc__)
    parser.add_argument("--window-minutes", type=int, default=60)
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--no-retrain", action="store_true", help="only report")
    args = parser.parse_args(argv)
    return run_and_report(
        monitor_drift, window_minutes=args.window_minutes, log_dir=args.log_dir, retrain=not args.no_retrain
    )


if __name__ == "__main__":
    sys.exit(main())
