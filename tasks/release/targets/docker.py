"""The `docker` target: one production container, replaced blue/green on one host port."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tasks.network import free_port
from tasks.release.capture import CaptureTarget
from tasks.release.docker_engine import (
    CONTAINER_LOG_DIR,
    HARDENING,
    LABEL,
    docker_name,
    enable_listener_migration,
    prepare_log_dir,
    retire,
    wait_container_ready,
)

Log = Callable[[str], None]


def production_containers(client, deploy_name: str) -> list:
    return client.containers.list(filters={"label": [f"{LABEL}.role=production", f"{LABEL}.deployment={deploy_name}"]})


def blue_green(
    client,
    image: str,
    version: int,
    *,
    model: str,
    deploy_name: str,
    host: str,
    port: int,
    log_dir: Path,
    ready_timeout: float,
    log: Log,
    capture: CaptureTarget | None = None,
):
    """Blue/green on one port: the new container binds host:port with SO_REUSEPORT next to the old one
    (host network), is checked on a private port of its own, and only when it is ready is the old one
    stopped (gunicorn finishes its in-flight requests). There is never a moment without a ready server."""
    previous = production_containers(client, deploy_name)
    private_port = free_port()
    enable_listener_migration()
    container = client.containers.run(
        image,
        detach=True,
        name=f"{deploy_name}-{docker_name(model)}-v{version}-{int(time.time())}",
        network_mode="host",
        environment={
            "MLOPS_SERVE_HOST": host,
            "MLOPS_SERVE_PORT": str(port),
            "MLOPS_SERVE_REUSE_PORT": "true",
            "MLOPS_SERVE_PRIVATE_PORT": str(private_port),
            "MLOPS_SERVE_PREDICTION_LOG_DIR": CONTAINER_LOG_DIR,
            **(capture.environment() if capture else {}),
        },
        volumes={str(prepare_log_dir(log_dir)): {"bind": CONTAINER_LOG_DIR, "mode": "rw"}},
        restart_policy={"Name": "unless-stopped"},
        labels={
            f"{LABEL}.role": "production",
            f"{LABEL}.deployment": deploy_name,
            f"{LABEL}.model": model,
            f"{LABEL}.version": str(version),
        },
        **HARDENING,
    )
    try:
        seconds = wait_container_ready(container, f"http://{host}:{private_port}", ready_timeout)
    except Exception:
        container.remove(force=True)
        raise
    log(f"{container.name} ready in {seconds:.2f} s on {host}:{port}; retiring {[c.name for c in previous]}")
    retire(previous)
    return container
