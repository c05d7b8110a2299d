"""MLflow bookkeeping every stage shares: where runs are stored, how a run starts and ends, which
version holds the `champion` alias and how to load it.

`tracked_run` is the one place an MLflow run is started and ended, for the pipeline, the search and
each of its trials, and the drift checks.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.artifact_store import SCHEME, tracking_server
from tasks.network import NotReady, refused_login, wait_until_ready
from tasks.params import ModelRef
from tasks.run_owner import end_orphaned_runs, end_status, owner_tags
from tasks.settings import PROJECT_DIR, Settings

EXPERIMENT_KIND, TRADITIONAL_ML = "mlflow.experimentKind", "custom_model_development"
CHALLENGER = "challenger"  # the registry's aliases: the newest version that passed the gates,
CHAMPION = "champion"  # and the one production serves


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer or refuses the credentials; nothing was trained or recorded."""


def check_tracking_server(uri: str, timeout: float = 20) -> None:
    """Fail in seconds, naming the URI, when a remote MLflow does not answer: MLflow's own client
    retries with backoff for minutes before it gives up, long after training has been paid for."""
    if not tracking_server(uri):
        return
    try:
        wait_until_ready(uri, timeout, path="/health")
    except NotReady as exc:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} does not answer ({exc}); start it (`make up`) or point "
            "MLOPS_TRACKING_URI at a running one"
        ) from exc
    check_credentials(uri)


def check_credentials(uri: str) -> None:
    """A server with users (`clothes-stack up` beyond loopback) answers 401 to a missing or wrong login:
    say so in one line, before anything trains, instead of MLflow's stack trace at the first log call."""
    username = os.environ.get("MLFLOW_TRACKING_USERNAME")
    login = f"{username}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}" if username else None
    # Unreachable: it answered its health check a moment ago, so MLflow's client retries as it does.
    status = refused_login(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1", login, (401, 403))
    if status is not None:
        given = f"the credentials of user {username!r} were refused" if username else "no credentials were given"
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} answered {status}: {given}. Set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (`clothes-stack env` on the stack's machine prints them)"
        )


def configure_mlflow(settings: Settings, experiment_name: str | None = None, artifact_subdir: str = "") -> str:
    """Point MLflow at the configured store and return the experiment id, creating it on first use."""
    uri = settings.tracking.resolved_tracking_uri()
    if uri.startswith("sqlite:"):
        settings.tracking.mlruns_dir.mkdir(parents=True, exist_ok=True)
    check_tracking_server(uri, settings.tracking.tracking_preflight_seconds)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return ensure_experiment(settings, experiment_name or settings.tracking.experiment_name, artifact_subdir)


def ensure_experiment(settings: Settings, name: str, artifact_subdir: str = "") -> str:
    """The experiment's id, created on first use; tagged as traditional ML so MLflow 3's UI opens it
    on its runs rather than its GenAI (traces) view."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        # Proxied: through a server over HTTP, else straight into <mlruns>/artifacts (tasks.artifact_store).
        location = (
            None if tracking_server(settings.tracking.resolved_tracking_uri()) else f"{SCHEME}:/{artifact_subdir}"
        )
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: TRADITIONAL_ML})
    if experiment.tags.get(EXPERIMENT_KIND) != TRADITIONAL_ML:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, TRADITIONAL_ML)
    return experiment.experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=PROJECT_DIR)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@contextmanager
def tracked_run(
    experiment_id: str, run_name: str, tags: dict[str, str] | None = None, parent_run_id: str | None = None
) -> Iterator[str]:
    """Start a run owned by this process (`tasks.run_owner`) and yield its id; it is this thread's
    active run meanwhile, so MLflow's fluent calls (`log_input`, `log_model`) land in it. It ends
    FINISHED, FAILED on an error, or KILLED when the process was stopped (Ctrl-C, SIGTERM, a
    cancelled deployment). A killed process's runs are ended by the next pipeline run."""
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags={**owner_tags(), **(tags or {})},
    )
    try:
        yield run.info.run_id
    except BaseException as exc:
        mlflow.end_run(end_status(exc))
        raise
    mlflow.end_run("FINISHED")


@task(name="prepare-tracking", cache_policy=NO_CACHE)  # no retries: the preflight already waits
def prepare_tracking_task(settings: Settings) -> str:
    """The experiment id, after runs left RUNNING by a killed pipeline on this host are ended."""
    experiment_id = configure_mlflow(settings)
    end_orphaned_runs([experiment_id])
    return experiment_id


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


def load_model_version(ref: ModelRef):  # -> keras.Model
    return mlflow.tensorflow.load_model(f"models:/{ref.name}/{ref.version}")
