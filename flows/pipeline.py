"""`train_and_deploy`: data -> validation -> training -> evaluation -> gates -> MLflow registry -> export
-> image build -> smoke test (QA container) -> deploy (blue/green) -> promote to champion."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.cli import run_and_report
from tasks.data import Dataset, DataSpec, load_data_task, validate_data_task
from tasks.evaluate import evaluate_task, predict_probabilities
from tasks.export import export_task
from tasks.gates import GateFailed, GateThresholds, failed_gates, gate_tags, gates_task
from tasks.monitoring import reference_task
from tasks.registry import (
    champion_accuracy_task,
    champion_version,
    configure_mlflow,
    end_orphaned_runs_task,
    git_commit,
    log_dataset,
    register_task,
)
from tasks.release import (
    ContainerParams,
    build_image_task,
    deploy_task,
    docker_client,
    promote_task,
    released_image,
    smoke_test_task,
)
from tasks.run_owner import end_status, owner_tags
from tasks.settings import Settings
from tasks.train import TrainParams, flat_params, train_task


class PipelineParams(BaseModel):
    """Everything a run can vary, one section per flow parameter: Prefect validates each and renders it
    as a form group in the UI; `prefect deployment run ... --param train='{"epochs": 5}'` sets one."""

    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainParams = Field(default_factory=TrainParams)
    thresholds: GateThresholds | None = Field(default=None, description="unset: MLOPS_MIN_ACCURACY etc.")
    model_name: str | None = Field(default=None, description="unset: MLOPS_MODEL_NAME (default 'clothes')")
    container: ContainerParams = Field(default_factory=ContainerParams)


@flow(name="train-and-deploy", log_prints=True)
def train_and_deploy(
    data: DataSpec | None = None,
    train: TrainParams | None = None,
    thresholds: GateThresholds | None = None,
    model_name: str | None = None,
    container: ContainerParams | None = None,
) -> dict:
    """A candidate that fails a gate ends the flow Failed, registers nothing and moves no alias."""
    params = PipelineParams(
        data=data or DataSpec(), train=train or TrainParams(), thresholds=thresholds, model_name=model_name,
        container=container or ContainerParams(),
    )  # fmt: skip
    settings = Settings()
    logger = get_run_logger()
    model_name = params.model_name or settings.model_name
    thresholds = params.thresholds or settings.gate_thresholds()
    experiment_id = configure_mlflow(settings)
    end_orphaned_runs_task(experiment_id)

    dataset = load_data_task(params.data, settings.data_dir)
    counts = validate_data_task(dataset)

    client = MlflowClient()
    commit = git_commit()
    run = client.create_run(
        experiment_id,
        run_name=f"lenet5-{runtime.flow_run.name or 'local'}",
        tags={
            "git_commit": commit,
            "prefect.flow_run_id": str(runtime.flow_run.id or ""),
            "model_name": model_name,
            **owner_tags(),
        },
    )
    run_id = run.info.run_id
    try:
        log_dataset(run_id, dataset, counts)
        trained = train_task(dataset, params.train, run_id)
        probabilities = predict_probabilities(trained.model, dataset.x_test)
        evaluation = evaluate_task(probabilities, dataset, run_id)
        reference_task(probabilities, dataset, run_id)
        champion = champion_accuracy_task(model_name, dataset)
        results = gates_task(run_id, evaluation, thresholds, champion)
        failures = failed_gates(results)
        if failures:
            client.set_tag(run_id, "candidate_status", "rejected")
            raise GateFailed("candidate rejected: " + "; ".join(f"{r.name}: {r.detail}" for r in failures))
        tags = {
            **gate_tags(results),
            "data.digest": dataset.digest,
            "git_commit": commit,
            "run_id": run_id,
            "test_accuracy": f"{evaluation.accuracy:.4f}",
            "class_names": json.dumps(list(dataset.class_names)),
            **{f"param.{k}": str(v) for k, v in flat_params(params.train).items()},
        }
        version = register_task(run_id, trained.model, dataset, model_name, tags)
    except BaseException as exc:
        client.set_terminated(run_id, end_status(exc))
        raise
    client.set_terminated(run_id, "FINISHED")
    export_dir = export_task(model_name, str(version.version), settings.model_root)
    release = release_stage(params.container, settings, model_name, str(version.version), run_id, export_dir,
                            trained.model, dataset, probabilities)  # fmt: skip

    summary = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "model_name": model_name,
        "model_version": str(version.version),
        "test_accuracy": evaluation.accuracy,
        "macro_f1": evaluation.macro_f1,
        "epochs_run": trained.epochs_run,
        "compared_with": {"version": champion[0], "accuracy": champion[1]} if champion else None,
        "data_digest": dataset.digest,
        "export_dir": str(export_dir),
        **release,
    }
    create_markdown_artifact(key="train-and-deploy-summary", markdown=_summary_markdown(summary, settings))
    logger.info("summary: %s", json.dumps(summary))
    return summary


def release_stage(
    params: ContainerParams,
    settings: Settings,
    name: str,
    version: str,
    run_id: str,
    export_dir: Path,
    model,
    dataset: Dataset,
    probabilities: np.ndarray,
) -> dict:
    """Build -> smoke test -> deploy -> promote. Any failure leaves `champion` and production as they were."""
    logger = get_run_logger()
    if params.enabled is None and docker_client() is None:
        logger.warning("no Docker engine answers: container stage skipped; v%s stays challenger", version)
        return {"image": None, "promoted": False}
    if params.enabled is False:
        return {"image": None, "promoted": False}
    images, expected = dataset.x_test[: params.parity_images], probabilities[: params.parity_images]
    image = build_image_task(name, version, export_dir, run_id, settings)
    report = smoke_test_task(image, name, version, int(model.count_params()), images, expected, params, settings)
    previous = champion_version(name)
    container = deploy_task(image.tag, version, settings) if params.deploy else None
    try:
        promote_task(name, version, run_id, image, report, settings)
    except Exception:
        if container and previous is not None:  # put production back on the champion the registry names
            logger.error("promotion failed: redeploying champion v%s", previous.version)
            deploy_task(released_image(previous, settings), previous.version, settings)
        raise
    return {"image": image.tag, "image_size_mb": image.size_mb, "smoke": asdict(report), "promoted": True,
            "production": container and f"http://{settings.deploy_host}:{settings.deploy_port}"}  # fmt: skip


def _summary_markdown(summary: dict, settings: Settings) -> str:
    ui = settings.mlflow_ui_url.rstrip("/")
    champion = summary["compared_with"]
    versus = f"champion v{champion['version']} at {champion['accuracy']:.4f}" if champion else "no champion yet"
    return (
        f"## {summary['model_name']} v{summary['model_version']} (alias challenger)\n\n"
        f"| what | value |\n|---|---|\n"
        f"| test accuracy | {summary['test_accuracy']:.4f} |\n"
        f"| macro F1 | {summary['macro_f1']:.4f} |\n"
        f"| epochs | {summary['epochs_run']} |\n"
        f"| compared with | {versus} |\n"
        f"| exported to | `{summary['export_dir']}` |\n"
        f"| image | `{summary['image']}` (promoted: {summary['promoted']}) |\n"
        f"| MLflow run | [{summary['run_id']}]({ui}/#/experiments/{summary['experiment_id']}/runs/{summary['run_id']})"
        f" in `{settings.resolved_tracking_uri()}` |\n"
        f"| model version | [{summary['model_name']} v{summary['model_version']}]"
        f"({ui}/#/models/{summary['model_name']}/versions/{summary['model_version']}) |\n"
    )


def parse_args(argv: list[str] | None = None) -> PipelineParams:
    parser = argparse.ArgumentParser(description="Train, evaluate, gate and register the clothes classifier.")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST IDX directory (default: MLOPS_DATA_DIR)")
    parser.add_argument("--image-folder", type=Path, help="train from root/<class_name>/*.png instead")
    parser.add_argument("--train-limit", type=int, help="use only the first N training images")
    parser.add_argument("--test-limit", type=int, help="use only the first N test images")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--model-name")
    parser.add_argument("--no-container", action="store_true", help="stop after export (no image, no deploy)")
    parser.add_argument("--no-deploy", action="store_true", help="build and smoke-test, but do not deploy")
    parser.add_argument("--params-json", help="full PipelineParams as JSON (overrides nothing else given)")
    args = parser.parse_args(argv)
    if args.params_json:
        return PipelineParams.model_validate_json(args.params_json)
    data = DataSpec(
        source="image-folder" if args.image_folder else "fashion-mnist",
        path=args.image_folder or args.data_dir,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
    )
    train_overrides = {
        key: value
        for key, value in {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": args.seed,
        }.items()
        if value is not None
    }
    container = ContainerParams(enabled=False if args.no_container else None, deploy=not args.no_deploy)
    return PipelineParams(
        data=data, train=TrainParams(**train_overrides), model_name=args.model_name, container=container
    )


def main(argv: list[str] | None = None) -> int:
    return run_and_report(train_and_deploy, **dict(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
