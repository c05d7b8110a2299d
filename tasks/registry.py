"""MLflow: experiment setup, dataset logging, the registry policy (challenger / champion aliases)."""

from __future__ import annotations

import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from serving.client import ClientError, wait_until_ready
from serving.preprocessing import to_model_input
from tasks.data import Dataset
from tasks.evaluate import evaluate_model
from tasks.run_owner import end_orphaned_runs
from tasks.settings import Settings

CHALLENGER = "challenger"
CHAMPION = "champion"
# Pinned so MLflow does not spend ~10 s inferring requirements by importing the model.
MODEL_PIP_REQUIREMENTS = ["tensorflow-cpu==2.21.*", "keras>=3.10,<4", "numpy<3"]


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer; nothing was trained or recorded."""


def check_tracking_server(uri: str, timeout: float = 20) -> None:
    """Fail in seconds, naming the URI, when a remote MLflow does not answer: MLflow's own client
    retries with backoff for minutes before it gives up, long after training has been paid for."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        wait_until_ready(uri, timeout, path="/health")
    except ClientError as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} does not answer ({exc}); start it (`make up`) or point "
            "MLOPS_TRACKING_URI at a running one"
        ) from exc


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id, creating it on first use."""
    uri = settings.resolved_tracking_uri()
    if uri.startswith("sqlite:"):
        settings.mlruns_dir.mkdir(parents=True, exist_ok=True)
    check_tracking_server(uri, settings.tracking_preflight_seconds)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return ensure_experiment(settings, settings.experiment_name)


def ensure_experiment(settings: Settings, name: str, artifact_subdir: str = "") -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # A remote server chooses its own artifact store; locally artifacts stay under mlruns/.
    local = settings.resolved_tracking_uri().startswith(("sqlite:", "file:"))
    location = f"{settings.artifact_location}/{artifact_subdir}".rstrip("/") if local else None
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@contextmanager
def active_run(run_id: str) -> Iterator[None]:
    """MLflow's fluent calls (log_input, log_model) need an active run, and leaving `start_run` marks it
    FINISHED; the pipeline owns the run's status, so it goes back to RUNNING until the pipeline ends it."""
    with mlflow.start_run(run_id=run_id):
        yield
    MlflowClient().update_run(run_id, status="RUNNING")


def log_dataset(run_id: str, dataset: Dataset, counts: dict[str, dict[str, int]]) -> None:
    """Record where the data came from, its content digest and class balance on the run."""
    client = MlflowClient()
    with active_run(run_id):
        for split, x, y in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
            # Only the digest identifies the data; a one-image profile keeps the run small.
            with warnings.catch_warnings():  # MLflow registers local paths twice and warns about it
                warnings.simplefilter("ignore", UserWarning)
                ds = mlflow.data.from_numpy(
                    x[:1],
                    targets=y[:1],
                    source=dataset.source,
                    name=f"fashion-mnist-{split}",
                    digest=dataset.digest[:16],
                )
            mlflow.log_input(ds, context=split)
        mlflow.log_params({"data.n_train": len(dataset.y_train), "data.n_test": len(dataset.y_test)})
        mlflow.set_tags({"data.digest": dataset.digest, "data.source": f"{dataset.origin}:{dataset.source}"})
    client.log_dict(run_id, counts, "data/class_counts.json")


def champion_version(name: str) -> ModelVersion | None:
    """The version holding alias `champion`, or None when the model or the alias does not exist yet."""
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = registered.aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(name, str(version))


def load_model_version(name: str, version: str | int):  # -> keras.Model
    return mlflow.tensorflow.load_model(f"models:/{name}/{version}")


def log_candidate_model(run_id: str, model, example_pixels: np.ndarray) -> str:
    """Log the Keras model (TensorFlow flavour) with signature and input example; return its model URI."""
    example = to_model_input(example_pixels)
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    with active_run(run_id):
        info = mlflow.tensorflow.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=MODEL_PIP_REQUIREMENTS,
        )
    return info.model_uri


def register_candidate(model_uri: str, name: str, tags: dict[str, str], description: str = "") -> ModelVersion:
    """New registry version with alias `challenger`. `champion` only moves after the smoke test."""
    client = MlflowClient()
    try:
        client.create_registered_model(name, description="Fashion-MNIST clothes classifier")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = mlflow.register_model(model_uri, name, tags=tags)
    if description:
        client.update_model_version(name, version.version, description=description)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return version


@task(name="end-orphaned-runs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def end_orphaned_runs_task(experiment_id: str) -> list[str]:
    """Runs left RUNNING by a killed pipeline on this host are ended before a new one starts."""
    return end_orphaned_runs([experiment_id])


@task(name="evaluate-champion", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def champion_accuracy_task(name: str, dataset: Dataset) -> tuple[str, float] | None:
    """The champion re-evaluated on this run's test set, so the regression gate compares like with like."""
    version = champion_version(name)
    logger = get_run_logger()
    if version is None:
        logger.info("no champion for model '%s' yet", name)
        return None
    model = load_model_version(name, version.version)
    accuracy = evaluate_model(model, dataset.x_test, dataset.y_test, dataset.class_names).accuracy
    logger.info("champion v%s scores %.4f on this test set", version.version, accuracy)
    return str(version.version), accuracy


@task(name="register-model", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def register_task(run_id: str, model, dataset: Dataset, name: str, tags: dict[str, str]) -> ModelVersion:
    model_uri = log_candidate_model(run_id, model, dataset.x_test[:1])
    version = register_candidate(model_uri, name, tags, description=f"trained in run {run_id}")
    MlflowClient().set_tag(run_id, "candidate_status", f"registered as {name} v{version.version}")
    get_run_logger().info("registered %s v%s with alias '%s'", name, version.version, CHALLENGER)
    return version


def promote_version(name: str, version: str | int, tags: dict[str, str], record_previous: bool = True) -> str | None:
    """Move `champion` to `version`; returns the version that held it. `previous_champion` on the new
    champion is what a rollback returns to (a rollback itself does not overwrite it)."""
    client = MlflowClient()
    previous = champion_version(name)
    previous_version = str(previous.version) if previous else None
    all_tags = dict(tags)
    if record_previous and previous_version and previous_version != str(version):
        all_tags["previous_champion"] = previous_version
    for key, value in all_tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return previous_version
