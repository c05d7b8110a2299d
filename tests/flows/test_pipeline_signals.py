"""A pipeline stopped (SIGTERM) or killed (SIGKILL) in the middle of training leaves nothing behind:
the real console script in a subprocess, its own temporary Prefect server and MLflow store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.reliability]


def start(tmp_path: Path, fashion_dir: Path, epochs: int) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "MLOPS_MLRUNS_DIR": str(tmp_path / "mlruns"),
        "MLOPS_DATA_DIR": str(fashion_dir),
    }
    for leftover in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLOPS_TRACKING_URI"):  # set by earlier tests
        env.pop(leftover, None)
    log = tmp_path / f"pipeline-{time.monotonic_ns()}.log"
    command = [
        str(Path(sys.executable).parent / "clothes-pipeline"),
        "--data.train-limit",
        "3000",
        "--data.test-limit",
        "500",
        "--data.holdout-size",
        "50",
        "--train.epochs",
        str(epochs),
        "--container.no-enabled",
    ]
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
    return process, log


def wait_for_training(process: subprocess.Popen, log: Path, timeout: float = 180) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while "epoch 2/" not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    return psutil.Process(process.pid).children(recursive=True)


def run_statuses(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
        return db.execute("select run_uuid, status from runs order by start_time").fetchall()


def gone(processes: list[psutil.Process], timeout: float = 15) -> bool:
    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


def test_sigterm_ends_the_run_killed_and_stops_the_temporary_server(tmp_path, fashion_dir):
    process, log = start(tmp_path, fashion_dir, epochs=50)
    children = wait_for_training(process, log)
    assert any("uvicorn" in " ".join(c.cmdline()) for c in children)  # Prefect's temporary API server
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert [status for _id, status in run_statuses(tmp_path)] == ["KILLED"]
    assert gone(children), [c.cmdline() for c in children if c.is_running()]
    assert "Stopping temporary server" in log.read_text()


def test_sigkill_leaves_no_server_and_the_next_run_ends_the_orphan(tmp_path, fashion_dir):
    process, log = start(tmp_path, fashion_dir, epochs=50)
    children = wait_for_training(process, log)
    process.kill()
    process.wait(timeout=10)
    assert gone(children)  # the reaper stops the temporary server once its parent is gone
    ((orphan, status),) = run_statuses(tmp_path)
    assert status == "RUNNING"

    process, log = start(tmp_path, fashion_dir, epochs=1)
    process.wait(timeout=300)
    statuses = dict(run_statuses(tmp_path))
    assert statuses[orphan] == "FAILED"
    assert len(statuses) == 2
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as db:
        (reason,) = db.execute("select value from tags where key='ended_by' and run_uuid=?", (orphan,)).fetchone()
    assert "ended without closing the run" in reason
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        states = [row[0] for row in db.execute("select state_type from flow_run order by start_time")]
    assert states[0] == "CRASHED"
