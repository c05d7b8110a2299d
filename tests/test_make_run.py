"""README's first command, `make run`, on a machine whose Docker engine is down: it starts the engine
where it can and the lifecycle reaches the container stage; where it cannot, it stops before training
and says what to run."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, require, require_root

STAMP = ".venv/.installed"  # `make -o` it: the suite's own venv counts as installed
ENGINE_STATE = Path(os.environ.get("DOCKER_ENGINE_STATE_DIR", "/tmp/clothes-docker-engine"))


def _make_run(args: str, env: dict[str, str], user: str | None = None) -> subprocess.CompletedProcess:
    command = ["make", "-C", str(REPO), "-o", STAMP, "run", f"ARGS={args}"]
    if user:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def _summary(stdout: str) -> dict:
    """The JSON the pipeline prints last (after make's and the engine script's lines)."""
    return json.JSONDecoder().raw_decode(stdout, stdout.index("\n{\n") + 1)[0]


def test_without_a_startable_engine_make_run_stops_before_training_and_says_what_to_run(tmp_path):
    require_root()  # to drop to nobody
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "HOME": str(tmp_path)}
    result = _make_run("--train.epochs 1", env, user="65534")  # nobody: may not start dockerd
    assert result.returncode != 0
    assert "make run ARGS=--container.no-enabled" in result.stderr
    assert "sudo make docker-up" in result.stderr
    assert "epoch" not in result.stdout + result.stderr  # nothing was trained


@pytest.mark.docker
@pytest.mark.slow
def test_make_run_starts_a_stopped_engine_and_reaches_the_container_stage(docker_engine, tmp_path):
    require_root()  # to start dockerd
    if not (ENGINE_STATE / "started-by-us").is_file():
        require("engine-restart", "the Docker engine was not started by scripts/docker-engine.sh: not ours to stop")
    running = [c.name for c in docker_engine.containers.list()]
    if running:
        require("engine-restart", f"containers run on the Docker engine ({', '.join(running)}): stopping it stops them")
    subprocess.run([REPO / "scripts" / "docker-engine.sh", "down"], check=True, capture_output=True, timeout=120)
    assert subprocess.run(["docker", "info"], capture_output=True).returncode != 0

    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLOPS_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "MLOPS_MODEL_ROOT": str(tmp_path / "models"),
        "MLOPS_IMAGE_NAME": name,
        "MLOPS_DEPLOY_NAME": name,
    }
    for leftover in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLOPS_TRACKING_URI"):  # set by earlier tests
        env.pop(leftover, None)
    args = (
        "--data.train-limit 2000 --data.test-limit 500 --data.holdout-size 100 --train.epochs 1 --train.batch-size 64 "
        "--container.no-deploy "
        "--thresholds "
        '\'{"min_accuracy": 0.3, "min_class_recall": 0, "max_regression": 0.5, "min_slice_accuracy": {}, '
        '"min_ood_auroc": 0, "min_ood_detection": 0, "max_ood_flagged": 1}\' '
        "--container.parity-images 50 --container.load-requests 200"
    )
    try:
        result = _make_run(args, env)
    finally:
        subprocess.run([REPO / "scripts" / "docker-engine.sh", "up"], capture_output=True, timeout=600)
        for image in docker_engine.images.list(name=name):
            docker_engine.images.remove(image.id, force=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[docker-engine] engine up" in result.stderr
    summary = _summary(result.stdout)
    assert summary["container_stage"] == "ran"
    assert summary["image"] == f"{name}:clothes-1"
    assert summary["promoted"]
    assert summary["smoke"]["top1_mismatches"] == 0
    assert summary["production"] is None
