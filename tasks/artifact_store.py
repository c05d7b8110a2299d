"""One artifact address for every client: `mlflow-artifacts:/<path>`.

Through an MLflow server (`make up` runs one with `--serve-artifacts`), such a URI is uploaded and
downloaded over HTTP, so workers on other machines need no shared filesystem. A client on the
server's own machine that opens the SQLite store directly (`make run`) reads and writes the same path
in the directory the server serves (`<mlruns>/artifacts`). Registered with MLflow as the repository
for the scheme (entry point `mlflow.artifact_repository`), so runs and model versions made either way
can be read the other way.

On the ground floor, not in the registry stage: MLflow loads this plugin while `import mlflow` is still
running, and the stage packages import `mlflow` themselves when they are imported.
"""

from __future__ import annotations

from urllib.parse import urlparse

from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.tracking._tracking_service.utils import get_tracking_uri

from tasks.settings import Settings

SCHEME = "mlflow-artifacts"


def local_path(artifact_uri: str, settings: Settings) -> str:
    """Where the server's `--artifacts-destination` (the settings' artifacts directory) keeps the URI."""
    return str(settings.tracking.artifacts_dir / urlparse(artifact_uri).path.lstrip("/"))


def tracking_server(tracking_uri: str) -> bool:
    """An MLflow server over HTTP (artifacts proxied), not a store this process opens itself."""
    return tracking_uri.startswith(("http://", "https://"))


def proxied_or_local(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None):
    """MLflow's own proxied repository with an HTTP tracking server; else the local directory."""
    tracking = tracking_uri or get_tracking_uri()
    if tracking_server(tracking):
        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking, registry_uri=registry_uri)
    return LocalArtifactRepository(local_path(artifact_uri, Settings()), tracking_uri=tracking_uri)
