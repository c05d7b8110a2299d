"""The pipeline's one settings object, read from the environment (prefix ``MLOPS_``): with
`tasks.params`, the ground floor. It imports nothing else of the project, so any module can use it.

Serving has its own small settings in ``serving.settings``: the image must not carry pipeline
configuration (tracking URIs, thresholds) it never uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.params import GateThresholds

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
# The files a Fashion-MNIST directory must hold (Keras' IDX .gz layout).
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def mlflow_ui_link(ui_url: str, page: str) -> str:
    """A page of the MLflow UI (`experiments/1/runs/<id>`, `models/clothes`) in its model-training view:
    MLflow 3's UI otherwise opens a browser's first visit in the GenAI view, whatever the experiment."""
    return f"{ui_url.rstrip('/')}/#/{page}?workflowType=machine_learning"


def runtime_defaults(state_dir: Path | None = None) -> dict[str, str]:
    """The process environment the flows want, whether started by `make`, a console script, a worker, the
    stack or the tests: homes of their own (nothing leaks into ~; the project's hidden directories, or
    `state_dir`'s subdirectories for the stack and the tests), no analytics calls from an offline
    machine, the time a fresh Prefect database needs to start, and no TensorFlow C++ info lines or MLflow
    download bars on the console."""
    if state_dir is None:
        homes = {
            "PREFECT_HOME": PROJECT_DIR / ".prefect",
            "KERAS_HOME": PROJECT_DIR / ".keras",
            "MPLCONFIGDIR": PROJECT_DIR / ".cache" / "matplotlib",
        }
    else:
        homes = {
            "PREFECT_HOME": state_dir / "prefect",
            "KERAS_HOME": state_dir / "keras",
            "MPLCONFIGDIR": state_dir / "matplotlib",
        }
    return {
        **{key: str(path) for key, path in homes.items()},
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a bar per model download, in the middle of the log
    }


def apply_runtime_defaults() -> None:
    """Set each of `runtime_defaults()` the environment does not set already (the environment wins)."""
    for key, value in runtime_defaults().items():
        os.environ.setdefault(key, value)


class Group(BaseSettings):
    """A concern's settings, each field read from the environment variable its name gives (prefix MLOPS_)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")


class TrackingSettings(Group):
    """Where runs and versions are recorded: MLflow's store, the stack's databases, the UI runs link to."""

    mlruns_dir: Path = Field(default=Path("mlruns"), description="local store: SQLite file and artifacts/")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; falls back to MLFLOW_TRACKING_URI, then SQLite"
    )
    tracking_preflight_seconds: float = Field(
        default=20, gt=0, description="how long a remote MLflow may take to answer before a run fails"
    )
    mlflow_ui_url: str = Field(default="http://127.0.0.1:5000", description="where run summaries link to")
    stack_db: Literal["sqlite", "postgres"] = Field(
        default="sqlite", description="the store of MLflow and the stack's Prefect server"
    )
    postgres_prefix: str = Field(default="clothes_", description="postgres: databases <prefix>mlflow, <prefix>prefect")
    postgres_socket_dir: Path = Field(default=Path("/var/run/postgresql"), description="postgres: its Unix socket")
    experiment_name: str = Field(default="clothes", description="MLflow experiment of the training runs")
    model_name: str = Field(default="clothes", description="registered model name")

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return self.backend_store_uri

    @property
    def sqlite_store_uri(self) -> str:
        return f"sqlite:///{(self.mlruns_dir / 'mlflow.db').resolve()}"

    @property
    def backend_store_uri(self) -> str:
        """The store `make run`, `make mlflow-ui` and `make up` share: SQLite, or PostgreSQL over its
        Unix socket (peer authentication, no password) with MLOPS_STACK_DB=postgres."""
        if self.stack_db == "postgres":
            return f"postgresql:///{self.postgres_prefix}mlflow?host={self.postgres_socket_dir}"
        return self.sqlite_store_uri

    @property
    def prefect_database_url(self) -> str | None:
        """The stack's Prefect server database; None: Prefect's SQLite default."""
        if self.stack_db == "postgres":
            return f"postgresql+asyncpg:///{self.postgres_prefix}prefect?host={self.postgres_socket_dir}"
        return None

    @property
    def artifacts_dir(self) -> Path:
        """What the MLflow server serves (`--artifacts-destination`) and local clients use directly."""
        return (self.mlruns_dir / "artifacts").resolve()


class ReleaseSettings(Group):
    """Export, image build and smoke test."""

    model_root: Path = Field(default=Path("models"), description="exports: <model root>/<name>/<version>/")
    image_name: str = Field(default="clothes-serving", description="serving image, tagged <name>:<version>")
    base_image: str = Field(default="python:3.11-slim", description="the serving image's base")
    wheelhouse_dir: Path = Field(default=Path("wheelhouse"), description="serving wheels for offline image builds")
    ready_timeout: float = Field(default=60, gt=0, description="seconds a container may take to become ready")
    registry: str | None = Field(
        default=None, description="host:port of the image registry releases are pushed to; unset: this engine only"
    )
    registry_username: str | None = Field(default=None, description="the user releases push as")
    registry_password: SecretStr | None = Field(default=None, description="that user's password")


class DeploySettings(Group):
    """Production: where and how the promoted image runs (MLOPS_DEPLOY_*)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_DEPLOY_", extra="ignore")

    target: Literal["docker", "swarm"] = Field(
        default="docker", description="docker: one container, blue/green; swarm: a replicated service"
    )
    replicas: int = Field(default=2, ge=1, description="swarm: serving replicas (mode replicated)")
    mode: Literal["replicated", "global"] = Field(
        default="replicated",
        description="swarm: replicated (the replicas anywhere) or global (one per node: every node's address "
        "answers through updates)",
    )
    cpus: float = Field(default=1.0, gt=0, description="swarm: CPU limit per replica")
    timeout: float = Field(default=300, gt=0, description="swarm: seconds a rollout may take")
    name: str = Field(default="clothes-serving", description="production container / service name")
    host: str = Field(default="127.0.0.1", description="the address production listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="the port production listens on")


class StackSettings(Group):
    """The shared stack `clothes-stack up` runs (MLOPS_STACK_*): where it listens and what guards it."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_STACK_", extra="ignore")

    host: str = Field(
        default="127.0.0.1", description="the address or DNS name Prefect, MLflow and the registry listen on"
    )
    auth: bool | None = Field(
        default=None, description="credentials on every server; unset: on for any address but loopback"
    )
    registry: bool | None = Field(
        default=None, description="run an image registry (TLS, htpasswd); unset: on for any address but loopback"
    )
    registry_port: int = Field(default=5443, ge=1, le=65535, description="the registry's port")
    store: bool = Field(
        default=True, description="run the S3 object store (SeaweedFS): capture of every replica's traffic"
    )
    store_port: int = Field(default=8333, ge=1, le=65535, description="the object store's S3 port")
    store_artifacts: bool | None = Field(
        default=None,
        description="MLflow's artifacts in the object store instead of mlruns/artifacts; unset: on for any "
        "address but loopback",
    )
    mlflow_workers: int | None = Field(
        default=None, ge=1, description="MLflow server processes; unset: 1 on SQLite, 4 on PostgreSQL"
    )


class MonitorSettings(Group):
    """What production logs and the drift monitor reads, and what it starts on drift."""

    prediction_log_dir: Path = Field(default=Path("logs/predictions"), description="mounted into production")
    capture_url: str | None = Field(
        default=None,
        description="s3://<bucket>/<prefix> production ships its traffic to and the monitor reads every node's "
        "traffic from (endpoint and credentials: AWS_*; `clothes-stack env` prints them); unset: this machine's log",
    )
    feedback_data_dir: Path = Field(default=Path("data/feedback"), description="labelled samples for retraining")
    retrain_deployment: str = Field(default="train-and-deploy/weekly", description="started when drift is found")
    notify_webhook: SecretStr | None = Field(
        default=None,
        description="Slack-compatible webhook `make up` sends releases, approvals, drift and gate failures to",
    )


class SearchSettings(Group):
    """Where the hyperparameter search's trials run (MLOPS_DASK_*)."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_DASK_", extra="ignore")

    address: str | None = Field(default=None, description="existing Dask scheduler; unset: a LocalCluster")
    workers: int = Field(default=2, ge=1, description="LocalCluster worker processes (one thread each)")


class Settings(BaseSettings):
    """The pipeline's settings, one group per concern; every field keeps its MLOPS_* environment name
    (`settings.deploy.port` is MLOPS_DEPLOY_PORT, `settings.tracking.mlruns_dir` MLOPS_MLRUNS_DIR).
    Defaults work on a laptop with nothing running: MLflow in SQLite under ``mlruns/``. Built once per
    flow run and passed down."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    data_dir: Path | None = Field(default=None, description="directory with the four Fashion-MNIST IDX .gz files")
    tracking: TrackingSettings = Field(default_factory=TrackingSettings, description="MLflow and the stack's store")
    release: ReleaseSettings = Field(default_factory=ReleaseSettings, description="export, image, smoke test")
    deploy: DeploySettings = Field(default_factory=DeploySettings, description="production (MLOPS_DEPLOY_*)")
    stack: StackSettings = Field(default_factory=StackSettings, description="the shared stack (MLOPS_STACK_*)")
    monitor: MonitorSettings = Field(default_factory=MonitorSettings, description="prediction log and retraining")
    search: SearchSettings = Field(default_factory=SearchSettings, description="the search's Dask (MLOPS_DASK_*)")
    gates: GateThresholds = Field(default_factory=GateThresholds, description="the gate policy's defaults")

    def fashion_mnist_dir(self, explicit: Path | None = None) -> Path | None:
        """Where Fashion-MNIST is, in order: `explicit`, MLOPS_DATA_DIR, a `shared/data/fashion-mnist`
        beside the project, Debian's `dataset-fashion-mnist` package. None: none of them has the files.
        An explicit or configured directory is returned even when incomplete, so the loader names it."""
        if explicit is not None or self.data_dir is not None:
            return Path(explicit or self.data_dir)  # type: ignore[arg-type]
        for candidate in DATA_CANDIDATES:
            if all((candidate / name).is_file() for name in IDX_FILES.values()):
                return candidate
        return None


DATA_CANDIDATES = (PROJECT_DIR.parent / "shared" / "data" / "fashion-mnist", DEBIAN_DATA_DIR)
