"""Shadow releases on a real Docker engine, with live traffic on production throughout (test images as
JSON and the example photos as files, in turn): a clearly worse candidate, let through offline by
lenient gates, is aborted by its disagreement with production; one whose image was configured to
squeeze photos instead of converting them passes its smoke test (JSON) and is aborted on the live
photos; one whose server refuses photo files (a pixel budget below theirs) is aborted by its errors;
and production, the champion and the log directory stay as they were. A candidate promoted by the
analysis and a person's approval: tests/ops/test_stack.py, through the stack's worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.pipeline import train_and_deploy
from serving.mirror import CONFIG_FILE
from tasks.params import ContainerParams, DataSpec, ReleaseParams, TrainParams
from tasks.release.docker_engine import LABEL
from tasks.tracking import CHAMPION
from tests.conftest import LENIENT, REPO
from tests.traffic import Traffic, served_version

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SHADOW = ReleaseParams(strategy="shadow", sample=1.0, min_images=600, interval_seconds=3, deadline_minutes=4)


PHOTOS = tuple(sorted((REPO / "examples" / "photos").iterdir()))


def params(fashion_dir, seed: int, train_limit: int = 60000, epochs: int = 3, serving: dict | None = None) -> dict:
    return {
        "data": DataSpec(path=fashion_dir, train_limit=train_limit, test_limit=2000, holdout_size=100),
        "train": TrainParams(epochs=epochs, seed=seed),
        "thresholds": LENIENT,
        "container": ContainerParams(enabled=True, parity_images=200, load_requests=200, serving=serving or {}),
    }


def test_shadow_aborts_candidates_worse_or_broken_on_live_traffic(
    release_env, docker_engine, fashion_dir, fashion_mnist
):
    port = release_env["MLOPS_DEPLOY_PORT"]
    log_dir = release_env["MLOPS_PREDICTION_LOG_DIR"]
    first = train_and_deploy(**params(fashion_dir, seed=1), release=SHADOW)
    assert first["promoted"]  # no champion yet: the first release goes direct
    assert first["shadow"] is None
    client = MlflowClient()

    with Traffic(port, clients=2, images=fashion_mnist.x_test[5000:6000], seconds=1200, files=PHOTOS) as traffic:
        worse = train_and_deploy(**params(fashion_dir, seed=3, train_limit=2000, epochs=1), release=SHADOW)
        squeezing = params(fashion_dir, seed=9, train_limit=20000, epochs=2, serving={"preprocess": "false"})
        squeezing = train_and_deploy(**squeezing, release=SHADOW)
        refusing = params(fashion_dir, seed=11, train_limit=5000, epochs=1, serving={"max_image_pixels": "784"})
        refusing = train_and_deploy(**refusing, release=SHADOW)
    assert traffic.failures == []
    assert traffic.versions.keys() == {1}

    aborted = worse["shadow"]
    assert aborted["outcome"] == "abort", aborted
    assert "disagrees with production" in " ".join(aborted["reasons"])
    assert aborted["estimated_accuracy"] < aborted["estimated_accuracy_production"] - 0.05
    assert not worse["promoted"]
    assert worse["container_stage"] == "not promoted: shadow analysis abort"
    v2 = client.get_model_version("clothes", "2")
    assert v2.tags["shadow.decision"] == "abort"
    assert client.get_run(v2.run_id).data.metrics["shadow.compared"] == aborted["compared"]
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"
    assert served_version(port) == 1

    # Fine offline (its smoke test sends JSON), broken on photos: it answers them as squeezed frames.
    broken = squeezing["shadow"]
    assert squeezing["container_stage"] == "not promoted: shadow analysis abort", broken
    assert re.search(r"disagrees with production|more inputs as not clothing", " ".join(broken["reasons"]))
    # Its server refuses every photo file (413): the failures abort it.
    failing = refusing["shadow"]
    assert refusing["container_stage"] == "not promoted: shadow analysis abort", failing
    assert "the shadow failed" in " ".join(failing["reasons"])
    assert failing["errors"] >= 10
    for version in ("3", "4"):
        assert client.get_model_version("clothes", version).tags["shadow.decision"] == "abort"
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"
    assert served_version(port) == 1
    shadows = docker_engine.containers.list(all=True, filters={"label": f"{LABEL}.role=shadow"})
    assert [c.name for c in shadows if c.name.startswith(release_env["MLOPS_DEPLOY_NAME"])] == []
    assert not (Path(log_dir) / CONFIG_FILE).exists()
