"""The server under test: the app over the shared model root (in process), and the production server
(gunicorn) on a free loopback port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def app(model_root):
    """The serving app over `model_root` with default settings."""
    from serving import create_app

    return create_app(model_root)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def client_with(model_root):
    """A test client of an app over `model_root` with the given serving settings (`client_with(max_batch=64)`)."""
    from serving import create_app
    from serving.settings import ServingSettings

    return lambda **settings: create_app(model_root, ServingSettings(**settings)).test_client()


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory) -> Path:
    """The server's TMPDIR: its per-start Prometheus directory (one file per worker) lives there."""
    return tmp_path_factory.mktemp("server-tmp")


@pytest.fixture(scope="module")
def server(model_root, server_tmp):
    """The production server (`python -m serving`: gunicorn, 2 workers) on a free loopback port."""
    import signal
    import subprocess
    import sys

    from tasks.network import free_port, wait_until_ready

    port = free_port()
    temp = server_tmp
    env = {
        **os.environ,
        "MLOPS_SERVE_HOST": "127.0.0.1",
        "MLOPS_SERVE_PORT": str(port),
        "MLOPS_SERVE_WORKERS": "2",
        "TMPDIR": str(temp),
        "MLOPS_SERVE_PREDICTION_LOG_DIR": str(temp / "predictions"),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "serving", "--model-root", str(model_root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, timeout=60, is_alive=lambda: process.poll() is None)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "Shutting down" in output or "Handling signal: term" in output
        assert not list(temp.glob("clothes-prometheus-*")), "the metrics directory outlived the server"
