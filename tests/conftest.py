"""Test setup: every store (Prefect, MLflow, Keras, matplotlib, exports, logs, wheels) lives in a
temporary directory, and the session checks that the user's own data was not touched."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="clothes-tests-"))
REPO = Path(__file__).resolve().parents[1]
# Where the pipeline writes by default, relative to the working tree (and mlflow.db, MLflow's own default
# store): a test must never write there.
USER_DATA = ("models", "mlruns", "logs", "data", ".stack", "wheelhouse", "mlflow.db")
for _key, _value in {
    "MLOPS_MODEL_ROOT": str(_HOME / "models"),
    "MLOPS_MLRUNS_DIR": str(_HOME / "mlruns"),
    "MLOPS_PREDICTION_LOG_DIR": str(_HOME / "logs" / "predictions"),
    "MLOPS_FEEDBACK_DATA_DIR": str(_HOME / "data" / "feedback"),
    "MLOPS_WHEELHOUSE_DIR": str(_HOME / "wheelhouse"),
}.items():
    os.environ[_key] = _value  # not setdefault: a user's own MLOPS_* must not lead tests into their data
# The flows' own defaults (tasks/settings.py), with every home under this run's directory.
from tasks.settings import runtime_defaults  # noqa: E402  (after the MLOPS_* above)

for _key, _value in {**runtime_defaults(_HOME), "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.3"}.items():
    os.environ.setdefault(_key, _value)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLOPS_TRACKING_URI", None)

from tasks.params import GateThresholds  # noqa: E402  (after the environment above)

# The one set of gates a tiny training run (1-2 epochs on a few thousand images) passes: these tests judge
# the pipeline's mechanics, not the model.
LENIENT = GateThresholds(
    min_accuracy=0.3,
    min_class_recall=0.0,
    max_regression=0.5,
    min_slice_accuracy={},
    max_slice_regression=1.0,
    min_ood_auroc=0.0,
    min_ood_detection=0.0,
    max_ood_flagged=1.0,
)


# What some tests need from the machine, and the variable that skips them by name. Without its variable a
# missing requirement fails the test with what is missing: a suite that "passes" untested is worse than
# one that fails. CI sets none of them, so its run has no skipped test.
OPT_OUTS = {
    "data": "MLOPS_TEST_WITHOUT_DATA",
    "docker": "MLOPS_TEST_WITHOUT_DOCKER",
    "root": "MLOPS_TEST_WITHOUT_ROOT",
    "engine-restart": "MLOPS_TEST_WITHOUT_ENGINE_RESTART",
    "swarm": "MLOPS_TEST_WITHOUT_SWARM",
    "postgres": "MLOPS_TEST_WITHOUT_POSTGRES",
    "chromium": "MLOPS_TEST_WITHOUT_CHROMIUM",
}


def pytest_unconfigure(config: pytest.Config) -> None:
    # A Prefect server started on demand is stopped at exit, after pytest closed the streams its
    # "stopping" line would go to (a traceback after the summary, not a failure).
    logging.disable(logging.INFO)


def require(what: str, missing: str) -> None:
    """A requirement of the running test is missing: skip when the user opted out by name, else fail."""
    variable = OPT_OUTS[what]
    if os.environ.get(variable) == "1":
        pytest.skip(f"{missing} ({variable}=1)")
    pytest.fail(f"{missing}; set {variable}=1 to skip the tests that need it", pytrace=False)


def require_root() -> None:
    if os.geteuid() != 0:
        require("root", "this test starts system services or drops privileges: it needs root")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files, found as the pipeline finds them; tests never download anything."""
    from tasks.settings import Settings

    directory = Settings().fashion_mnist_dir()
    if directory is None or not (directory / "t10k-labels-idx1-ubyte.gz").is_file():
        require("data", "Fashion-MNIST IDX files not found (`make data` gets them; or set MLOPS_DATA_DIR)")
    return directory  # type: ignore[return-value]


@pytest.fixture(scope="session")
def fashion_mnist(fashion_dir: Path):
    """The whole dataset, read once per session."""
    from tasks.data.sources import load_fashion_mnist

    return load_fashion_mnist(fashion_dir)


@pytest.fixture(scope="session")
def small_dataset(fashion_mnist):
    """A small real subset: 2,000 train / 500 test images."""
    return fashion_mnist.subset(2000, 500)


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
def trained_model(fashion_mnist):
    """LeNet-5 after 3 quick epochs on the full training split (~85% test accuracy, ~10 s)."""
    from tasks.params import TrainParams
    from tasks.training.train import train_model

    return train_model(fashion_mnist, TrainParams(epochs=3, validation_fraction=0.05)).model


@pytest.fixture(scope="session")
def ood_stats(trained_model, fashion_mnist) -> dict:
    """The out-of-distribution flag fitted and calibrated for `trained_model` as the pipeline does it."""
    from tasks.evaluation.ood import fit_detector
    from tasks.params import TrainParams

    return fit_detector(trained_model, fashion_mnist, TrainParams(validation_fraction=0.05))


@pytest.fixture(scope="session")
def estimator_stats(trained_model, fashion_mnist):
    """The accuracy estimate's statistics for `trained_model`, fitted as its training run would."""
    from tasks.evaluation.estimate import fit_for_run
    from tasks.evaluation.metrics import predict_probabilities
    from tasks.params import TrainParams

    test_probabilities = predict_probabilities(trained_model, fashion_mnist.x_test)
    return fit_for_run(trained_model, fashion_mnist, TrainParams(validation_fraction=0.05), test_probabilities)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, trained_model, ood_stats: dict, estimator_stats) -> Path:
    """An exported store serving `clothes` v1 and v2 side by side, like a real deployment: v2 with the
    out-of-distribution flag and the accuracy estimate, v1 as versions exported before them were."""
    from tasks.data.dataset import FASHION_MNIST_CLASSES
    from tasks.release.export import build_metadata, export_model

    root = tmp_path_factory.mktemp("models")
    for version in (1, 2):
        metadata = build_metadata(trained_model, "clothes", version, FASHION_MNIST_CLASSES, f"run-{version}", {})
        if version == 2:
            export_model(trained_model, root, metadata, ood_stats, estimator_stats)
        else:
            export_model(trained_model, root, metadata)
    return root


def capturing_replica(model_root: Path, log_dir: Path, node: str, url: str, **settings):
    """The server app as one replica on `node` runs it: its own log directory, shipping to `url`, ids
    signed with the key every replica shares, inputs logged (what retraining needs)."""
    from serving import create_app
    from serving.settings import ServingSettings

    serving = ServingSettings(
        prediction_log_dir=log_dir,
        prediction_log_inputs=True,
        capture_url=url,
        node=node,
        feedback_secret="the deployment's",
        **settings,
    )
    return create_app(model_root, serving)


def ship_the_rest(log_dir: Path, store, node: str, seconds: float = 30) -> None:
    """A worker's exit ships within its 5 s deadline; what a store slower than that leaves (its first
    writes after it starts can be) another worker of the node ships, as here. Files still being
    shipped by the exiting worker's thread are locked and skipped until it is done."""
    import contextlib
    import time

    from serving.log.capture import Capture
    from serving.log.object_store import StoreError

    other = Capture(log_dir, store, node)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (
        list(log_dir.glob("predictions-*")) or list((log_dir / "summaries").rglob("*.json"))
    ):
        with contextlib.suppress(StoreError):
            other.ship()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def object_store(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible store (SeaweedFS, the stack's) on loopback, for the module's tests."""
    from ops.seaweedfs import running_store

    with running_store(tmp_path_factory.mktemp("store")) as store:
        yield store


@pytest.fixture(scope="session")
def docker_engine():
    """The local Docker engine (`make docker-up` starts one; CI's run starts it first)."""
    from tasks.release.docker_engine import docker_client

    client = docker_client()
    if client is None:
        require("docker", "no Docker engine answers (`make docker-up` starts one)")
    return client


@pytest.fixture
def release_env(docker_engine, mlflow_store, tmp_path, monkeypatch):
    """Own image name, deployment name and port, so a test never touches anything it did not create."""
    from tasks.network import free_port

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


def production_containers() -> list:
    """Production containers this suite did not create (its own deployments are named clothes-test-*)."""
    from tasks.release.docker_engine import LABEL, docker_client

    client = docker_client()
    if client is None:
        return []
    return [
        c
        for c in client.containers.list(filters={"label": f"{LABEL}.role=production"})
        if not c.labels.get(f"{LABEL}.deployment", "").startswith("clothes-test-")
    ]


def tree_digest(root: Path, live: tuple[Path, ...] = ()) -> dict[str, str]:
    """Path -> content hash (or symlink target) of every file under the user's data directories, but for
    those a running production server writes itself (`live`: its prediction log, which the user's own
    traffic moves while the tests run)."""
    digests = {}
    for top in USER_DATA:
        base = root / top
        for path in [base] if base.is_file() else sorted(base.rglob("*")) if base.exists() else []:
            if any(path.is_relative_to(directory) for directory in live):
                continue
            if path.is_symlink():
                digests[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
            elif path.is_file():
                digests[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


@pytest.fixture(scope="session", autouse=True)
def users_data_untouched():
    """The suite as a whole must leave the working tree's data and running production byte-identical."""
    production = production_containers()
    live = tuple(Path(m["Source"]).resolve() for c in production for m in c.attrs["Mounts"] if m.get("RW"))
    before, containers = tree_digest(REPO, live), {c.id for c in production}
    yield
    after = tree_digest(REPO, live)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the tests changed the user's data: {changed[:10]}"
    assert {c.id for c in production_containers()} == containers, "the tests changed the running production"


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium through Selenium, offline: the pages a person opens, opened for real."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        require("chromium", "no chromium and chromium-driver (`apt-get install chromium chromium-driver`)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look anything up: the paths are given
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, seconds: float = 30):  # -> selenium's WebDriverWait
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds)
