"""`train_and_deploy`: data -> validation -> training (calibrated) -> evaluation -> gates -> MLflow registry -> the
`release` subflow (export -> image build -> smoke test -> deploy -> promote to champion)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.cli import console_script, flow_app
from flows.release import ParityCheck, Release, release_flow
from tasks.data import load_data_task, log_dataset_task, validate_data_task
from tasks.evaluation import (
    ChampionScore,
    Evidence,
    OodReport,
    champion_score_task,
    estimator_task,
    evaluate_slices_task,
    evaluate_task,
    gates_task,
    holdout_task,
    ood_task,
    predict_task,
    reference_task,
)
from tasks.params import ContainerParams, DataSpec, GateThresholds, ModelRef, ReleaseParams, TrainParams, Trigger
from tasks.registry import model_card, register_task, unchanged_champion_task
from tasks.settings import Settings, mlflow_ui_link
from tasks.tracking import git_commit, prepare_tracking_task, tracked_run
from tasks.training import calibrate_task, train_task


@flow(name="train-and-deploy", log_prints=True)
def train_and_deploy(
    data: DataSpec | None = None,
    train: TrainParams | None = None,
    thresholds: GateThresholds | None = None,
    model_name: str | None = None,
    container: ContainerParams | None = None,
    release: ReleaseParams | None = None,
    trigger: Trigger | None = None,
) -> dict:
    """Train, evaluate, gate, register, export, and release the clothes classifier. A candidate that
    fails a gate ends the flow Failed, registers nothing and moves no alias.

    Parameters
    ----------
    thresholds
        Quality gates; unset: MLOPS_MIN_ACCURACY, MLOPS_MIN_CLASS_RECALL, MLOPS_MAX_REGRESSION.
    model_name
        Registered model name; unset: MLOPS_MODEL_NAME ('clothes').
    release
        How the new version reaches users: direct, or judged first as a shadow on live traffic.
    trigger
        Why this run started (tags `trigger*` on the MLflow run and model version); unset: manual.
    """
    settings = Settings()
    data, train, container = data or DataSpec(), train or TrainParams(), container or ContainerParams()
    trigger = trigger or Trigger()
    thresholds = thresholds or settings.gates
    model_name = model_name or settings.tracking.model_name
    commit = git_commit()

    experiment_id = prepare_tracking_task(settings)
    dataset = load_data_task(data, settings)
    counts = validate_data_task(dataset)
    champion_again = unchanged_champion_task(model_name, dataset.digest, train, commit)
    if champion_again is not None:  # training is seeded: the same model again, nothing new to register
        return unchanged(champion_again, dataset.digest, trigger)
    tags = {
        "git_commit": commit,
        "prefect.flow_run_id": str(runtime.flow_run.id or ""),
        "model_name": model_name,
        **trigger.tags(),
    }
    with tracked_run(experiment_id, f"lenet5-{runtime.flow_run.name or 'local'}", tags) as run_id:
        log_dataset_task(dataset, counts)
        trained = train_task(dataset, train, run_id)
        calibrate_task(trained.model, dataset, train, run_id)
        probabilities = predict_task(trained.model, dataset)
        evaluation = evaluate_task(probabilities, dataset, run_id)
        estimator_task(trained.model, dataset, train, probabilities, run_id)
        reference_task(probabilities, dataset, run_id)
        holdout = holdout_task(dataset, data.holdout_size, train.seed)
        correct = evaluate_slices_task(trained.model, dataset, holdout, probabilities, run_id)
        ood = ood_task(trained.model, dataset, train, holdout, data.ood_size, run_id)
        champion = champion_score_task(model_name, dataset, holdout)
        evidence = Evidence(evaluation, correct, ood)
        gates = gates_task(run_id, evidence, thresholds, champion)
        card = model_card(run_id, commit, dataset, evaluation, gates, train, trigger)
        ref = register_task(run_id, trained.model, dataset, model_name, card)
    parity = ParityCheck(dataset.x_test, probabilities, trained.parameters)
    released = release_flow(ref, run_id, parity, container, release or ReleaseParams(), champion, settings)

    summary = Summary(
        experiment_id, run_id, ref, evidence, ood, trained.epochs_run, champion, dataset.digest, trigger.kind, released
    )
    summary.publish(settings)
    result = summary.as_dict()
    get_run_logger().info("summary: %s", json.dumps(result, default=str))
    return result


def unchanged(champion: ModelRef, digest: str, trigger: Trigger) -> dict:
    """The result of a run that would retrain the champion as it is: it says so and registers nothing."""
    reason = (
        f"{champion} is champion and was trained on the same data ({digest[:12]}), parameters and code: "
        "nothing new to learn from, nothing trained or registered"
    )
    get_run_logger().warning(reason)
    create_markdown_artifact(key="train-and-deploy-summary", markdown=f"## Unchanged\n\n{reason}.\n")
    return {
        "status": "unchanged",
        "model_name": champion.name,
        "champion_version": str(champion.version),
        "data_digest": digest,
        "trigger": trigger.kind,
        "reason": reason,
        "promoted": False,
    }


@dataclass(frozen=True)
class Summary:
    """One run's outcome, typed once: the flow's JSON result, its log line and its Prefect artifact are
    all rendered from it."""

    experiment_id: str
    run_id: str
    ref: ModelRef
    evidence: Evidence
    ood: OodReport
    epochs_run: int
    champion: ChampionScore | None
    data_digest: str
    trigger: str
    release: Release

    def as_dict(self) -> dict:
        champion = self.champion
        return {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "model_name": self.ref.name,
            "model_version": str(self.ref.version),
            "test_accuracy": self.evidence.evaluation.accuracy,
            "macro_f1": self.evidence.evaluation.macro_f1,
            "epochs_run": self.epochs_run,
            "compared_with": champion and {"version": str(champion.ref.version), "accuracy": champion.accuracy},
            "slice_accuracy": self.evidence.slice_accuracy,
            "ood_auroc": self.ood.auroc,
            "ood_detection_rate": self.ood.detected,
            "data_digest": self.data_digest,
            "trigger": self.trigger,
            **self.release.as_dict(),
        }

    def publish(self, settings: Settings) -> None:
        """The run's Prefect artifacts: a table of what it did, and links to its MLflow run and version."""
        ref, release, champion = self.ref, self.release, self.champion
        run = mlflow_ui_link(settings.tracking.mlflow_ui_url, f"experiments/{self.experiment_id}/runs/{self.run_id}")
        version = mlflow_ui_link(settings.tracking.mlflow_ui_url, f"models/{ref.name}/versions/{ref.version}")
        rows = {
            "test accuracy": round(self.evidence.evaluation.accuracy, 4),
            "macro F1": round(self.evidence.evaluation.macro_f1, 4),
            "epochs": self.epochs_run,
            "out-of-distribution AUROC": round(self.ood.auroc, 4),
            "compared with": f"champion v{champion.ref.version} at {champion.accuracy:.4f}" if champion else "none yet",
            "exported to": str(release.export_dir),
            "trigger": self.trigger,
            "container stage": release.stage,
            "image": release.image or "none",
            "alias": "champion" if release.promoted else "challenger",
            "MLflow run": f"{self.run_id} in {settings.tracking.resolved_tracking_uri()}",
        }
        create_table_artifact(
            [{"what": k, "value": v} for k, v in rows.items()],
            key="train-and-deploy-summary",
            description=f"{ref}: {rows['alias']}",
        )
        create_link_artifact(run, link_text=f"MLflow run {self.run_id}", key="mlflow-run")
        create_link_artifact(version, link_text=f"MLflow {ref}", key="mlflow-model-version")


app = flow_app(train_and_deploy, "clothes-pipeline")
main = console_script(app)

if __name__ == "__main__":
    sys.exit(main())
