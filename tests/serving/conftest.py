"""The server under test: the app over the shared model root (in process), and the production server
(gunicorn) on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.servers import running_server


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
    predictions = str(server_tmp / "predictions")
    with running_server(model_root, {"TMPDIR": str(server_tmp)}, prediction_log_dir=predictions) as running:
        yield running.base
    assert running.process.returncode == 0, running.output
    assert "Shutting down" in running.output or "Handling signal: term" in running.output
    assert not list(server_tmp.glob("clothes-prometheus-*")), "the metrics directory outlived the server"
