"""Deploy a smoke-tested image to production: `docker` (one container, blue/green on one host port) or
`swarm` (a replicated service, tasks.swarm). Either target retires what the other left running, once its
own replacement is ready, so switching targets costs no downtime."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from mlflow.entities.model_registry import ModelVersion
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.docker_engine import (
    CONTAINER_LOG_DIR,
    HARDENING,
    LABEL,
    SERVER_UID,
    free_port,
    require_docker,
    retire,
    wait_container_ready,
)
from tasks.params import ModelRef
from tasks.settings import Settings
from tasks.swarm import deploy_service, remove_service, swarm_manager

Log = Callable[[str], None]


def production_containers(client, deploy_name: str) -> list:
    return client.containers.list(filters={"label": [f"{LABEL}.role=production", f"{LABEL}.deployment={deploy_name}"]})


def _enable_listener_migration() -> None:
    """Linux >= 5.14: a closing SO_REUSEPORT listener hands its queued connections to the remaining one,
    so no connection is reset during the swap. Best effort (needs root; the default netns here)."""
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv4/tcp_migrate_req").write_text("1")


def prepare_log_dir(log_dir: Path) -> Path:
    log_dir = log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        os.chown(log_dir, SERVER_UID, -1)  # the image's non-root user writes here
    except PermissionError:
        log_dir.chmod(0o777)
    return log_dir


def deploy(
    client,
    image: str,
    version: int,
    *,
    deploy_name: str,
    host: str,
    port: int,
    log_dir: Path,
    ready_timeout: float,
    log: Log,
):
    """Blue/green on one port: the new container binds host:port with SO_REUSEPORT next to the old one
    (host network), is checked on a private port of its own, and only when it is ready is the old one
    stopped (gunicorn finishes its in-flight requests). There is never a moment without a ready server."""
    previous = production_containers(client, deploy_name)
    private_port = free_port()
    _enable_listener_migration()
    container = client.containers.run(
        image,
        detach=True,
        name=f"{deploy_name}-v{version}-{int(time.time())}",
        network_mode="host",
        environment={
            "MLOPS_SERVE_HOST": host, "MLOPS_SERVE_PORT": str(port), "MLOPS_SERVE_REUSE_PORT": "true",
            "MLOPS_SERVE_PRIVATE_PORT": str(private_port), "MLOPS_SERVE_PREDICTION_LOG_DIR": CONTAINER_LOG_DIR,
        },
        volumes={str(prepare_log_dir(log_dir)): {"bind": CONTAINER_LOG_DIR, "mode": "rw"}},
        restart_policy={"Name": "unless-stopped"},
        labels={f"{LABEL}.role": "production", f"{LABEL}.deployment": deploy_name, f"{LABEL}.version": str(version)},
        **HARDENING,
    )  # fmt: skip
    try:
        seconds = wait_container_ready(container, f"http://{host}:{private_port}", ready_timeout)
    except Exception:
        container.remove(force=True)
        raise
    log(f"{container.name} ready in {seconds:.2f} s on {host}:{port}; retiring {[c.name for c in previous]}")
    retire(previous)
    if swarm_manager(client) and remove_service(client, deploy_name):
        log(f"removed the swarm service {deploy_name}")
    return container


def released_image(version: ModelVersion, settings: Settings) -> str:
    """The image a registered version was released as: the tag promotion recorded, else its build tag."""
    return version.tags.get("image", f"{settings.image_name}:{version.version}")


def tag_champion(client, image: str, settings: Settings) -> None:
    """`<image name>:champion` always names the image production should be running."""
    client.images.get(image).tag(settings.image_name, "champion")


def deploy_replicas(client, image: str, version: int, settings: Settings, log: Log) -> str:
    """The `swarm` target: roll the service onto `image`, then retire the `docker` target's container."""
    _enable_listener_migration()
    name = deploy_service(
        client, image, version, timeout=settings.deploy_timeout, log=log, deploy_name=settings.deploy_name,
        host=settings.deploy_host, port=settings.deploy_port, replicas=settings.deploy_replicas,
        cpus=settings.deploy_cpus, log_dir=prepare_log_dir(settings.prediction_log_dir),
    )  # fmt: skip
    previous = production_containers(client, settings.deploy_name)
    if previous:
        log(f"retiring {[c.name for c in previous]}: the service {name} serves the port now")
    retire(previous)
    return name


@task(name="deploy", task_run_name="deploy-{image_tag}", cache_policy=NO_CACHE)
def deploy_task(image_tag: str, ref: ModelRef, settings: Settings) -> str:
    """The container (docker) or service (swarm) now serving `image_tag`."""
    logger = get_run_logger()
    client = require_docker()
    if settings.deploy_target == "swarm":
        name = deploy_replicas(client, image_tag, ref.version, settings, logger.info)
    else:
        name = deploy(
            client, image_tag, ref.version, deploy_name=settings.deploy_name, host=settings.deploy_host,
            port=settings.deploy_port, log_dir=settings.prediction_log_dir, ready_timeout=settings.ready_timeout,
            log=logger.info,
        ).name  # fmt: skip
    logger.info("production (%s): %s serving %s on http://%s:%d", settings.deploy_target, name, image_tag,
                settings.deploy_host, settings.deploy_port)  # fmt: skip
    return name
