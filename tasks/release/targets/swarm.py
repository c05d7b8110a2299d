"""Serving replicas as a Docker Swarm service: swarm rolls a new image out task by task (start-first,
each new task healthy before an old one stops) and rolls back by itself when a new task fails.

Replicas spread over the nodes, join each node's host network and share the port with SO_REUSEPORT, so the
kernel spreads connections over every replica on a node, as in the `docker` target's blue/green swap.
Nodes other than the manager pull the image from the team's registry, by digest, with the credentials
the deploying client logged in with.

Two modes. `replicated`: N replicas wherever swarm places them (one node: N processes sharing the port;
a dead node's replicas move to the others). `global`: one replica on every node, replaced in place on
updates, so every node's address answers throughout; a replicated update may start a task's replacement
on another node, leaving the old node without a listener for a moment (measured: thousands of refused
connections on that node's address during one update of 2 replicas on 2 nodes). Swarm's routing mesh is not
used: it needs IPVS, which kernels without the `ip_vs` module (this project's CI machines) lack, and it
adds a NAT hop per request. Across nodes, each node answers on the port; a load balancer or DNS in front
spreads clients over the nodes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from docker.errors import NotFound
from docker.types import (
    Healthcheck,
    Mount,
    Resources,
    RestartPolicy,
    RollbackConfig,
    SecretReference,
    UpdateConfig,
)
from docker.utils import parse_bytes

from tasks.release.capture import CREDENTIALS_FILE, CaptureTarget
from tasks.release.docker_engine import CONTAINER_LOG_DIR, HARDENING, LABEL, SERVER_UID, ContainerStageError

FEEDBACK_KEY_FILE = "feedback-key"
Log = Callable[[str], None]
ROLLED_BACK = ("rollback_completed", "rollback_paused", "paused")  # "paused": the update stopped
SECOND = 1_000_000_000  # the API's durations are nanoseconds


def swarm_manager(client) -> bool:
    """True when this engine manages a swarm (services can be created through it)."""
    swarm = client.info().get("Swarm", {})
    return swarm.get("LocalNodeState") == "active" and bool(swarm.get("ControlAvailable"))


def production_service(client, deploy_name: str):  # -> docker.models.services.Service | None
    try:
        return client.services.get(deploy_name)
    except NotFound:
        return None


def feedback_key(client, deploy_name: str) -> SecretReference:
    """The swarm secret holding the key of prediction ids, made once per deployment name: every replica on
    every node verifies the ids any other issued, also across updates."""
    name = f"{deploy_name}-feedback-key"
    found = client.secrets.list(filters={"name": name})
    secret = next((s for s in found if s.name == name), None) or client.secrets.create(
        name=name, data=os.urandom(32).hex(), labels={f"{LABEL}.deployment": deploy_name}
    )
    return SecretReference(secret.id, name, filename=FEEDBACK_KEY_FILE, uid=str(SERVER_UID), gid="0", mode=0o400)


def capture_credentials(client, deploy_name: str, capture: CaptureTarget) -> SecretReference | None:
    """The swarm secret with the store's credentials (None: the nodes have their own, e.g. a role)."""
    content = capture.credentials_file()
    if content is None:
        return None
    name = capture.secret_name(deploy_name)
    found = client.secrets.list(filters={"name": name})
    secret = next((s for s in found if s.name == name), None) or client.secrets.create(
        name=name, data=content, labels={f"{LABEL}.deployment": deploy_name}
    )
    return SecretReference(secret.id, name, filename=CREDENTIALS_FILE, uid=str(SERVER_UID), gid="0", mode=0o400)


def service_spec(
    image: str,
    version: int,
    *,
    deploy_name: str,
    host: str,
    port: int,
    replicas: int,
    mode: str = "replicated",
    cpus: float,
    log_dir: Path,
    feedback_secret: SecretReference | None = None,
    capture: CaptureTarget | None = None,
    capture_secret: SecretReference | None = None,
) -> dict:
    """Keyword arguments of `services.create`/`Service.update`: the same hardening as the `docker` target's
    container, plus how swarm replaces and restarts tasks."""
    resources = Resources(mem_limit=parse_bytes(HARDENING["mem_limit"]), cpu_limit=int(cpus * SECOND))
    resources["Limits"]["Pids"] = HARDENING["pids_limit"]  # API 1.41; the SDK has no argument for it
    return {
        "image": image,
        "name": deploy_name,
        "labels": {f"{LABEL}.role": "production", f"{LABEL}.deployment": deploy_name, f"{LABEL}.version": str(version)},
        "container_labels": {f"{LABEL}.deployment": deploy_name, f"{LABEL}.version": str(version)},
        "mode": {"Global": {}} if mode == "global" else {"Replicated": {"Replicas": replicas}},
        "env": [
            f"MLOPS_SERVE_HOST={host}",
            f"MLOPS_SERVE_PORT={port}",
            "MLOPS_SERVE_REUSE_PORT=true",
            f"MLOPS_SERVE_PREDICTION_LOG_DIR={CONTAINER_LOG_DIR}",
            *([f"MLOPS_SERVE_FEEDBACK_SECRET_FILE=/run/secrets/{FEEDBACK_KEY_FILE}"] if feedback_secret else []),
            *([f"{key}={value}" for key, value in capture.settings_env().items()] if capture else []),
            *(["MLOPS_SERVE_NODE={{.Node.Hostname}}"] if capture else []),  # the node in captured files' keys
            *([f"AWS_SHARED_CREDENTIALS_FILE=/run/secrets/{CREDENTIALS_FILE}"] if capture_secret else []),
        ],
        "secrets": [s for s in (feedback_secret, capture_secret) if s is not None],
        # Prediction log files are named after it: one set per task. A global task's name holds the node's
        # id too and outgrows the 63 bytes a hostname may have.
        "hostname": "{{.Task.ID}}" if mode == "global" else "{{.Task.Name}}",
        "networks": ["host"],
        "preferences": [("spread", "node.id")],  # replicas over as many nodes as there are
        "mounts": [
            Mount(CONTAINER_LOG_DIR, str(log_dir), type="bind"),
            Mount("/tmp", None, type="tmpfs", tmpfs_size=64 * 1024 * 1024),
        ],
        "read_only": True,
        "cap_drop": HARDENING["cap_drop"],
        "resources": resources,
        "healthcheck": Healthcheck(
            test=["CMD", "python", "-m", "serving.healthcheck"],
            interval=2 * SECOND,
            timeout=3 * SECOND,
            retries=3,
            start_period=60 * SECOND,
        ),
        "stop_grace_period": 30 * SECOND,  # gunicorn finishes its in-flight requests
        "restart_policy": RestartPolicy(condition="any", delay=SECOND, max_attempts=0),
        "update_config": UpdateConfig(
            parallelism=1,
            delay=SECOND,
            order="start-first",
            failure_action="rollback",
            monitor=10 * SECOND,
            max_failure_ratio=0,
        ),
        "rollback_config": RollbackConfig(parallelism=1, order="start-first", failure_action="pause"),
    }


def expected_replicas(client, mode: str, replicas: int) -> int:
    """How many tasks a converged service runs: `replicas`, or in global mode one per node that takes tasks."""
    if mode != "global":
        return replicas
    return sum(
        1
        for node in client.nodes.list()
        if node.attrs["Status"]["State"] == "ready" and node.attrs["Spec"]["Availability"] == "active"
    )


def update_status(service) -> dict:
    """Swarm's record of the service's newest update ({} for a service never updated)."""
    service.reload()
    return service.attrs.get("UpdateStatus") or {}


def running_tasks(service, image: str) -> list[dict]:
    """Tasks meant to run that run (and, with a healthcheck, are healthy) on `image`."""
    return [
        task
        for task in service.tasks(filters={"desired-state": "running"})
        if task["Status"]["State"] == "running" and task["Spec"]["ContainerSpec"]["Image"] == image
    ]


def task_states(service) -> str:
    """What swarm says of the newest tasks: why they do not run."""
    tasks = sorted(service.tasks(), key=lambda task: task["UpdatedAt"], reverse=True)[:4]
    return "; ".join(
        f"task {task['ID'][:12]} {task['Status']['State']}: {task['Status'].get('Err') or task['Status']['Message']}"
        for task in tasks
    )


def wait_converged(service, image: str, replicas: int, timeout: float, before: dict | None = None) -> float:
    """Seconds until `replicas` healthy tasks run `image` and swarm calls the update complete. Raises when
    swarm rolled the update back (after the rollback finished: production is as it was) or time ran out.
    `before` is the update status from before this update: until swarm replaces it, it says nothing."""
    started = time.monotonic()
    while True:
        status = update_status(service)
        state = "pending" if before and status == before else status.get("State", "created")
        if state in ROLLED_BACK:
            raise ContainerStageError(
                f"swarm rolled the update of {service.name} to {image} back ({state}): {status.get('Message', '')}"
            )
        # No new update after a few seconds: nothing to roll (the same image again, or only the replica count).
        settled = state in ("completed", "created") or (state == "pending" and time.monotonic() - started > 3)
        if settled and len(running_tasks(service, image)) >= replicas:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ContainerStageError(
                f"{service.name}: {len(running_tasks(service, image))} of {replicas} replicas of {image} running "
                f"after {timeout:.0f} s (update state {state!r}: {status.get('Message', '')}); {task_states(service)}"
            )
        time.sleep(0.5)


def deploy_service(client, image: str, version: int, *, timeout: float, log: Log, **spec_args) -> str:
    """Create the service or roll it onto `image`; return when the rollout converged.

    A failed or timed-out rollout leaves production as it was: swarm rolls a failing update back itself; a
    new service that never got ready is removed; an update that hangs is put back on the previous spec."""
    if not swarm_manager(client):
        raise ContainerStageError("this Docker engine is not a swarm manager (`make swarm-up` makes it one)")
    deploy_name, capture = spec_args["deploy_name"], spec_args.get("capture")
    spec = service_spec(
        image,
        version,
        feedback_secret=feedback_key(client, deploy_name),
        capture_secret=capture_credentials(client, deploy_name, capture) if capture else None,
        **spec_args,
    )
    replicas = expected_replicas(client, spec_args.get("mode", "replicated"), spec_args["replicas"])
    service = production_service(client, spec["name"])
    if service is None:
        service = client.services.create(**spec)
        try:
            seconds = wait_converged(service, image, replicas, timeout)
        except ContainerStageError:
            service.remove()
            raise
        log(f"service {service.name} created: {replicas} replicas of {image} in {seconds:.1f} s")
        return service.name
    before = service.attrs["Spec"]
    if set(before["Mode"]) != set(spec["mode"]):
        raise ContainerStageError(
            f"the service {service.name} runs in {next(iter(before['Mode'])).lower()} mode and swarm cannot change a "
            "service's mode: `clothes-stack down --serving` removes it, then deploy again"
        )
    previous = before["TaskTemplate"]["ContainerSpec"]["Image"]
    status = service.attrs.get("UpdateStatus")
    service.update(**spec)
    try:
        seconds = wait_converged(service, image, replicas, timeout, status)
    except ContainerStageError as exc:
        if "rolled the update" not in str(exc):  # timed out: swarm has not given up yet, so put it back
            service.reload()
            service.update(
                **{
                    **spec,
                    "image": previous,
                    "labels": before["Labels"],
                    "container_labels": before["TaskTemplate"]["ContainerSpec"].get("Labels"),
                }
            )
        raise
    log(f"service {service.name} rolled from {previous} to {image} in {seconds:.1f} s")
    return service.name


def remove_service(client, deploy_name: str, timeout: float = 60) -> bool:
    """Remove the service and wait until its containers have stopped (each finishes its requests first),
    so that when this returns only what replaced the service answers on the port."""
    service = production_service(client, deploy_name)
    if service is None:
        return False
    service.remove()
    deadline = time.monotonic() + timeout
    while client.containers.list(filters={"label": f"com.docker.swarm.service.name={deploy_name}"}):
        if time.monotonic() > deadline:
            raise ContainerStageError(f"containers of the removed service {deploy_name} still run after {timeout} s")
        time.sleep(0.5)
    return True
