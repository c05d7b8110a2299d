"""What the release tests on a real Docker engine share: a deployment of their own."""

from __future__ import annotations

import uuid

import pytest

from tasks.network import free_port


@pytest.fixture
def release_env(docker_engine, mlflow_store, tmp_path, monkeypatch):
    """Own image name, deployment name and port, so a test never touches anything it did not create."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        "MLOPS_IMAGE_NAME": f"clothes-test-{suffix}",
        "MLOPS_DEPLOY_NAME": f"clothes-test-{suffix}",
        "MLOPS_DEPLOY_PORT": str(free_port()),
        "MLOPS_MODEL_ROOT": str(tmp_path / "models"),
        "MLOPS_PREDICTION_LOG_DIR": str(tmp_path / "logs"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    for container in docker_engine.containers.list(all=True, filters={"name": env["MLOPS_DEPLOY_NAME"]}):
        container.remove(force=True)
    for image in docker_engine.images.list(name=env["MLOPS_IMAGE_NAME"]):
        docker_engine.images.remove(image.id, force=True)
