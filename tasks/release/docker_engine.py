"""What every container step shares: the engine client, the labels and hardening of our containers,
and waiting for a container's server to become ready."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from tasks.network import NotReady, wait_until_ready

LABEL = "io.clothes-mlops"
SERVER_UID = 10001  # the serving image's non-root user
CONTAINER_LOG_DIR = "/var/log/clothes"  # where a production server writes its prediction log
# The server needs no privileges, no writable image and few processes; bounds keep a runaway worker from
# taking the host down. /tmp holds gunicorn's heartbeat files and the Prometheus multiprocess directory.
HARDENING: dict[str, Any] = {
    "mem_limit": "1g",
    "pids_limit": 256,
    "cap_drop": ["ALL"],
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=64m,mode=1777"},
    "security_opt": ["no-new-privileges"],
}


class ContainerStageError(RuntimeError):
    """A build, start, smoke test or deployment failed; the message says which and why."""


def docker_client():  # -> docker.DockerClient | None
    """A client for the local engine, or None when no engine answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except DockerException:
        return None


def require_docker():  # -> docker.DockerClient
    client = docker_client()
    if client is None:
        raise ContainerStageError("no Docker engine answers (scripts/docker-engine.sh up starts one)")
    return client


def retire(containers: list) -> None:
    """Stop (gunicorn finishes its in-flight requests within the grace period) and remove."""
    for container in containers:
        container.stop(timeout=30)
        container.remove()


def docker_name(text: str) -> str:
    """`text` as Docker accepts it in a tag or a container name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 100 here)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", text).lstrip(".-")[:100] or "model"


def wait_container_ready(container, base_url: str, timeout: float) -> float:
    """Seconds until ready; fails fast with the container's last log lines when it exits."""

    def alive() -> bool:
        container.reload()
        return container.status in ("created", "running")

    try:
        return wait_until_ready(base_url, timeout, alive)
    except NotReady as exc:
        logs = container.logs(tail=40).decode(errors="replace")
        raise ContainerStageError(f"{exc}; container log:\n{logs}") from exc


def enable_listener_migration() -> None:
    """Linux >= 5.14: a closing SO_REUSEPORT listener hands its queued connections to the remaining one,
    so no connection is reset during a swap or a rolling update. Best effort (needs root; the default netns)."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text("1")


def prepare_log_dir(log_dir: Path) -> Path:
    """The host directory production servers write their prediction log into, writable by the image's user."""
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chown(log_dir, SERVER_UID, -1)
    except PermissionError:
        log_dir.chmod(0o777)
    return log_dir
