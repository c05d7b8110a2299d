"""Test setup: every store (Prefect, MLflow, Keras, matplotlib) lives in a temporary directory."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="clothes-tests-"))
for _key, _value in {
    "PREFECT_HOME": str(_HOME / "prefect"),
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3",
    "KERAS_HOME": str(_HOME / "keras"),
    "MPLCONFIGDIR": str(_HOME / "matplotlib"),
    "TF_CPP_MIN_LOG_LEVEL": "2",
}.items():
    os.environ.setdefault(_key, _value)
os.environ.pop("MLFLOW_TRACKING_URI", None)

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = [
    os.environ.get("MLOPS_DATA_DIR"),
    str(REPO.parent / "shared" / "data" / "fashion-mnist"),
    "/usr/share/datasets/fashion-mnist",
]


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files; tests never download anything."""
    for candidate in DATA_CANDIDATES:
        if candidate and (Path(candidate) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(candidate)
    pytest.skip("Fashion-MNIST IDX files not found (set MLOPS_DATA_DIR)")


@pytest.fixture(scope="session")
def small_dataset(fashion_dir: Path):
    """A small real subset: 2,000 train / 500 test images."""
    from tasks.data import load_fashion_mnist

    return load_fashion_mnist(fashion_dir).subset(2000, 500)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
        logging.disable(logging.INFO)  # its "stopping server" line would hit pytest's closed capture stream
    logging.disable(logging.NOTSET)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite MLflow store per test, configured as users configure it: through MLOPS_*."""
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLOPS_MLRUNS_DIR", str(store))
    monkeypatch.delenv("MLOPS_TRACKING_URI", raising=False)
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; monkeypatch removes it again afterwards.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return store


@pytest.fixture(scope="session")
def trained_model(fashion_dir: Path):
    """LeNet-5 after 3 quick epochs on the full training split (~85% test accuracy, ~10 s)."""
    from tasks.data import load_fashion_mnist
    from tasks.train import TrainParams, train_model

    dataset = load_fashion_mnist(fashion_dir)
    return train_model(dataset, TrainParams(epochs=3, validation_fraction=0.05)).model


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, trained_model) -> Path:
    """An exported store serving `clothes` v1 and v2 side by side, like a real deployment."""
    from tasks.data import FASHION_MNIST_CLASSES
    from tasks.export import build_metadata, export_model

    root = tmp_path_factory.mktemp("models")
    for version in (1, 2):
        metadata = build_metadata(trained_model, "clothes", version, FASHION_MNIST_CLASSES, f"run-{version}", {})
        export_model(trained_model, root, metadata)
    return root


@pytest.fixture(scope="session")
def docker_engine():
    """The local Docker engine. CI starts one (scripts/docker-engine.sh up) and sets MLOPS_REQUIRE_DOCKER=1,
    so there a missing engine fails the run instead of skipping these tests."""
    from tasks.release import docker_client

    client = docker_client()
    if client is None:
        if os.environ.get("MLOPS_REQUIRE_DOCKER") == "1":
            pytest.fail("MLOPS_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine (scripts/docker-engine.sh up starts one)")
    return client
