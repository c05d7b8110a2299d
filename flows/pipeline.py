"""`train_and_deploy`: data -> validation -> training -> evaluation -> gates -> MLflow registry -> export
-> image build -> smoke test (QA container) -> deploy (blue/green) -> promote to champion."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact

from flows.cli import console_script, flow_app
from tasks.data import load_data_task, validate_data_task
from tasks.dataset import Dataset
from tasks.deploy import deploy_task, released_image
from tasks.docker_engine import docker_client
from tasks.evaluate import evaluate_task, predict_task
from tasks.export import export_task
from tasks.gates import gates_task
from tasks.holdout import evaluate_slices_task, holdout_task
from tasks.image import build_image_task
from tasks.kubernetes import ARTIFACT as KUBERNETES_ARTIFACT
from tasks.kubernetes import kubernetes_manifests_task
from tasks.monitoring import reference_task
from tasks.params import ContainerParams, DataSpec, GateThresholds, ModelRef, TrainParams, Trigger
from tasks.promote import promote_task
from tasks.registry import champion_score_task, champion_version, model_card, register_task
from tasks.settings import Settings, mlflow_ui_link
from tasks.smoke import smoke_test_task
from tasks.tracking import git_commit, log_dataset_task, prepare_tracking_task, tracked_run
from tasks.train import train_task


@flow(name="train-and-deploy", log_prints=True)
def train_and_deploy(
    data: DataSpec | None = None,
    train: TrainParams | None = None,
    thresholds: GateThresholds | None = None,
    model_name: str | None = None,
    container: ContainerParams | None = None,
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
    trigger
        Why this run started (tags `trigger*` on the MLflow run and model version); unset: manual.
    """
    settings = Settings()
    data, train, container = data or DataSpec(), train or TrainParams(), container or ContainerParams()
    trigger = trigger or Trigger()
    thresholds = thresholds or settings.gate_thresholds()
    model_name = model_name or settings.model_name
    commit = git_commit()

    experiment_id = prepare_tracking_task(settings)
    dataset = load_data_task(data, settings)
    counts = validate_data_task(dataset)
    tags = {"git_commit": commit, "prefect.flow_run_id": str(runtime.flow_run.id or ""), "model_name": model_name,
            **trigger.tags()}  # fmt: skip
    with tracked_run(experiment_id, f"lenet5-{runtime.flow_run.name or 'local'}", tags) as run_id:
        log_dataset_task(dataset, counts)
        trained = train_task(dataset, train, run_id)
        probabilities = predict_task(trained.model, dataset)
        evaluation = evaluate_task(probabilities, dataset, run_id)
        reference_task(probabilities, dataset, run_id)
        holdout = holdout_task(dataset, data.holdout_size, train.seed)
        on_slices = evaluate_slices_task(trained.model, holdout, dataset.class_names, run_id)
        champion = champion_score_task(model_name, dataset, holdout)
        gates = gates_task(run_id, evaluation, thresholds, champion, on_slices)
        card = model_card(run_id, commit, dataset, evaluation, gates, train, trigger)
        ref = register_task(run_id, trained.model, dataset, model_name, card)
    export_dir = export_task(ref, settings.model_root)
    release = release_stage(container, settings, ref, run_id, export_dir, trained.model, dataset, probabilities)

    summary = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_name": ref.name,
        "model_version": str(ref.version),
        "test_accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1,
        "epochs_run": trained.epochs_run,
        "compared_with": {"version": str(champion.ref.version), "accuracy": champion.accuracy} if champion else None,
        "slice_accuracy": on_slices,
        "data_digest": dataset.digest,
        "trigger": trigger.kind,
        "export_dir": str(export_dir),
        **release,
    }
    create_markdown_artifact(key="train-and-deploy-summary", markdown=summary_markdown(summary, settings))
    get_run_logger().info("summary: %s", json.dumps(summary))
    return summary


def release_stage(
    params: ContainerParams,
    settings: Settings,
    ref: ModelRef,
    run_id: str,
    export_dir: Path,
    model,
    dataset: Dataset,
    probabilities: np.ndarray,
) -> dict:
    """Build -> smoke test -> deploy -> promote -> Kubernetes manifests of the promoted image. Any failure
    before promotion leaves `champion` and production as they were."""
    logger = get_run_logger()
    if params.enabled is False:
        return {"container_stage": "disabled (container.enabled=false)", "image": None, "promoted": False}
    if params.enabled is None and docker_client() is None:
        skipped = "skipped: no Docker engine answers (`make docker-up` starts one)"
        logger.warning("container stage %s; %s stays challenger", skipped, ref)
        return {"container_stage": skipped, "image": None, "promoted": False}
    images, expected = dataset.x_test[: params.parity_images], probabilities[: params.parity_images]
    image = build_image_task(ref, export_dir, run_id, settings)
    report = smoke_test_task(image, ref, int(model.count_params()), images, expected, params, settings)
    previous = champion_version(ref.name)
    container = deploy_task(image.tag, ref, settings) if params.deploy else None
    try:
        promote_task(ref, run_id, image, report, settings)
    except Exception:
        if container and previous is not None:  # put production back on the champion the registry names
            logger.error("promotion failed: redeploying champion v%s", previous.version)
            deploy_task(released_image(previous, settings), ModelRef(ref.name, int(previous.version)), settings)
        raise
    kubernetes_manifests_task(image.tag, ref, run_id, settings)
    production = container and f"http://{settings.deploy_host}:{settings.deploy_port}"
    return {"container_stage": "ran", "image": image.tag, "image_size_mb": image.size_mb, "smoke": asdict(report),
            "promoted": True, "production": production, "deploy_target": container and settings.deploy_target,
            "kubernetes_manifests": KUBERNETES_ARTIFACT}  # fmt: skip


def summary_markdown(summary: dict, settings: Settings) -> str:
    run = mlflow_ui_link(settings.mlflow_ui_url, f"experiments/{summary['experiment_id']}/runs/{summary['run_id']}")
    version = mlflow_ui_link(
        settings.mlflow_ui_url, f"models/{summary['model_name']}/versions/{summary['model_version']}"
    )
    champion = summary["compared_with"]
    versus = f"champion v{champion['version']} at {champion['accuracy']:.4f}" if champion else "no champion yet"
    alias = "champion" if summary["promoted"] else "challenger"
    return (
        f"## {summary['model_name']} v{summary['model_version']} (alias {alias})\n\n"
        f"| what | value |\n|---|---|\n"
        f"| test accuracy | {summary['test_accuracy']:.4f} |\n"
        f"| macro F1 | {summary['macro_f1']:.4f} |\n"
        f"| epochs | {summary['epochs_run']} |\n"
        f"| compared with | {versus} |\n"
        f"| exported to | `{summary['export_dir']}` |\n"
        f"| trigger | {summary['trigger']} |\n"
        f"| container stage | {summary['container_stage']} |\n"
        f"| image | `{summary['image']}` (promoted: {summary['promoted']}) |\n"
        f"| MLflow run | [{summary['run_id']}]({run}) in `{settings.resolved_tracking_uri()}` |\n"
        f"| model version | [{summary['model_name']} v{summary['model_version']}]({version}) |\n"
    )


app = flow_app(train_and_deploy, "clothes-pipeline")
main = console_script(app)

if __name__ == "__main__":
    sys.exit(main())
