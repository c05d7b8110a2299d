"""The pipeline's one settings object, read from the environment (prefix ``MLOPS_``).

Serving has its own small settings in ``serving.settings``: the image must not carry pipeline
configuration (tracking URIs, thresholds) it never uses.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.gates import GateThresholds

DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")


class Settings(BaseSettings):
    """Defaults work on a laptop with nothing running: MLflow in SQLite under ``mlruns/``."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    mlruns_dir: Path = Path("mlruns")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; falls back to MLFLOW_TRACKING_URI, then SQLite"
    )
    tracking_preflight_seconds: float = Field(
        default=20, gt=0, description="how long a remote MLflow may take to answer before a run fails"
    )
    mlflow_ui_url: str = Field(default="http://127.0.0.1:5000", description="where run summaries link to")
    experiment_name: str = "clothes"
    model_name: str = "clothes"
    data_dir: Path | None = Field(default=None, description="directory with the four Fashion-MNIST IDX .gz files")
    model_root: Path = Path("models")

    # Container stage
    image_name: str = "clothes-serving"
    base_image: str = "python:3.11-slim"
    wheelhouse_dir: Path = Field(default=Path("wheelhouse"), description="serving wheels for offline image builds")
    ready_timeout: float = Field(default=60, gt=0, description="seconds a container may take to become ready")
    deploy_name: str = Field(default="clothes-serving", description="production container name prefix")
    deploy_host: str = "127.0.0.1"
    deploy_port: int = Field(default=8080, ge=1, le=65535)
    prediction_log_dir: Path = Field(default=Path("logs/predictions"), description="mounted into production")

    # Hyperparameter search
    dask_address: str | None = Field(default=None, description="existing Dask scheduler; unset: a LocalCluster")
    dask_workers: int = Field(default=2, ge=1, description="LocalCluster worker processes (one thread each)")

    # Monitoring
    feedback_data_dir: Path = Field(default=Path("data/feedback"), description="labelled samples for retraining")
    retrain_deployment: str = Field(default="train-and-deploy/weekly", description="started when drift is found")

    min_accuracy: float = Field(default=0.88, ge=0, le=1)
    min_class_recall: float = Field(default=0.60, ge=0, le=1)
    max_regression: float = Field(default=0.005, ge=0, le=1, description="tolerated accuracy drop vs champion")

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{(self.mlruns_dir / 'mlflow.db').resolve()}"

    def gate_thresholds(self) -> GateThresholds:
        return GateThresholds(
            min_accuracy=self.min_accuracy,
            min_class_recall=self.min_class_recall,
            max_regression=self.max_regression,
        )

    @property
    def artifact_location(self) -> str:
        return (self.mlruns_dir / "artifacts").resolve().as_uri()
