"""Running the stack's deployments as a user does, with a run small enough for a test."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import LENIENT

# `prefect deployment run` parameters of a run that trains in seconds and builds no image (the stack tests).
SMALL_RUN = {
    "data": '{"train_limit": 2000, "test_limit": 500, "holdout_size": 50}',
    "train": '{"epochs": 1, "batch_size": 64}',
    "thresholds": LENIENT.model_dump_json(),
    "container": '{"enabled": false}',
}


def run_deployment(env: dict[str, str], params: dict[str, str], timeout: int = 400) -> subprocess.CompletedProcess:
    """`prefect deployment run train-and-deploy/weekly --watch`, as a user runs it, with `env`; fails
    after `timeout` seconds."""
    arguments = [a for k, v in params.items() for a in ("--param", f"{k}={v}")]
    command = [
        sys.executable,
        "-m",
        "prefect",
        "deployment",
        "run",
        "train-and-deploy/weekly",
        "--watch",
        "--watch-timeout",
        str(timeout),
        *arguments,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout + 50)
