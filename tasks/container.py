"""Container stage: offline wheelhouse, build context, image build, QA smoke test, blue/green deploy.

Pure logic over the Docker SDK; the Prefect wrappers and the registry side live in `tasks/release.py`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import orjson

from serving.client import ClientError, wait_until_ready

PROJECT_DIR = Path(__file__).resolve().parents[1]
LABEL = "io.clothes-mlops"
CONTAINER_LOG_DIR = "/var/log/clothes"
SERVER_UID = 10001  # the image's non-root user
# tensorflow-cpu and friends ship manylinux_2_27/2_28 only and pip does not fill in lower tags itself.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64")  # fmt: skip

Log = Callable[[str], None]
# The server needs no privileges, no writable image and few processes; bounds keep a runaway worker from
# taking the host down. /tmp holds gunicorn's heartbeat files and the Prometheus multiprocess directory.
HARDENING = {
    "mem_limit": "1g",
    "pids_limit": 256,
    "cap_drop": ["ALL"],
    "read_only": True,
    "tmpfs": {"/tmp": "rw,size=64m,mode=1777"},
    "security_opt": ["no-new-privileges"],
}


class ContainerStageError(RuntimeError):
    """A build, start, smoke test or deployment failed; the message says which and why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- build -------------------------------------------------------------------------------------------


def serving_requirements(project_dir: Path = PROJECT_DIR) -> list[str]:
    """The `serving` extra of pyproject.toml: the only packages the image gets."""
    with (project_dir / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["project"]["optional-dependencies"]["serving"])


def ensure_wheelhouse(wheelhouse: Path, requirements: list[str], constraints: Path) -> Path:
    """Download the serving wheels once (pinned by constraints.txt); rebuilt only when those change.
    Air-gapped machines can fill the directory by other means: the build itself never needs a network."""
    key = hashlib.sha256(("\n".join(requirements) + constraints.read_text()).encode()).hexdigest()
    stamp = wheelhouse / ".requirements-sha256"
    if stamp.is_file() and stamp.read_text() == key:
        return wheelhouse
    wheelhouse.mkdir(parents=True, exist_ok=True)
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "-d", str(wheelhouse),
               "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
               *platforms, "-c", str(constraints), *requirements]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise ContainerStageError(f"could not prepare the wheelhouse in {wheelhouse}:\n{result.stderr[-2000:]}")
    stamp.write_text(key)
    return wheelhouse


def build_context(
    workdir: Path, model_dirs: list[Path], wheelhouse: Path, requirements: list[str], project_dir: Path = PROJECT_DIR
) -> Path:
    """Only what the image needs: Dockerfile, requirements, wheels, serving/ and the model versions."""
    context = workdir / "context"
    context.mkdir(parents=True)
    shutil.copy2(project_dir / "Dockerfile.serve", context / "Dockerfile.serve")
    shutil.copy2(project_dir / "constraints.txt", context / "constraints.txt")
    (context / "requirements.txt").write_text("\n".join(requirements) + "\n")
    shutil.copytree(project_dir / "serving", context / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        wheelhouse, context / "wheelhouse", copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*")
    )
    for model_dir in model_dirs:  # <root>/<name>/<version>
        shutil.copytree(model_dir, context / "models" / model_dir.parent.name / model_dir.name)
    return context


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_image(
    client, context: Path, tag: str, base_image: str, labels: dict[str, str], log: Log, nocache: bool = False
) -> tuple[str, float]:
    """Build with the classic builder and stream its log; return (image id, seconds).

    The dependency stage stays in Docker's cache, so a model-only change rebuilds one small layer."""
    started = time.perf_counter()
    image_id = None
    for chunk in client.api.build(
        path=str(context), dockerfile="Dockerfile.serve", tag=tag, buildargs={"BASE_IMAGE": base_image},
        labels=labels, rm=True, forcerm=True, pull=False, decode=True, nocache=nocache,
    ):  # fmt: skip
        if "stream" in chunk and chunk["stream"].strip():
            log(chunk["stream"].rstrip())
        if "error" in chunk:
            raise ContainerStageError(f"image build failed: {chunk['error'].strip()}")
        if "ID" in chunk.get("aux", {}):
            image_id = chunk["aux"]["ID"]
    if image_id is None:
        image_id = client.images.get(tag).id
    return image_id, time.perf_counter() - started


# --- run and smoke test ------------------------------------------------------------------------------


def wait_container_ready(container, base_url: str, timeout: float) -> float:
    """Seconds until ready; fails fast with the container's last log lines when it exits."""

    def alive() -> bool:
        container.reload()
        return container.status in ("created", "running")

    try:
        return wait_until_ready(base_url, timeout, alive)
    except ClientError as exc:
        logs = container.logs(tail=40).decode(errors="replace")
        raise ContainerStageError(f"{exc}; container log:\n{logs}") from exc


def start_qa_container(client, image: str, name: str, labels: dict[str, str]) -> tuple[object, str]:
    """The candidate on a free loopback port, bridge network; returns (container, base URL)."""
    port = free_port()
    container = client.containers.run(
        image, detach=True, name=name, labels={**labels, f"{LABEL}.role": "qa"},
        ports={"8080/tcp": ("127.0.0.1", port)}, environment={"MLOPS_SERVE_WORKERS": "2"}, **HARDENING,
    )  # fmt: skip
    return container, f"http://127.0.0.1:{port}"


@dataclass
class SmokeReport:
    ready_seconds: float = 0.0
    parity_images: int = 0
    top1_mismatches: int = 0
    max_probability_diff: float = 0.0
    load_requests: int = 0
    load_errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests_per_s: float = 0.0

    def as_metrics(self) -> dict[str, float]:
        return {f"smoke_{k}": float(v) for k, v in asdict(self).items()}


def _post_json(url: str, body: object, timeout: float = 30) -> dict:
    return orjson.loads(_post(url, orjson.dumps(body), timeout))


def check_metadata(base_url: str, name: str, version: int, number_of_parameters: int) -> None:
    with urllib.request.urlopen(f"{base_url}/models/{name}/v{version}", timeout=10) as response:
        info = orjson.loads(response.read())
    expected = {"name": name, "version": version, "number_of_parameters": number_of_parameters}
    wrong = {k: info.get(k) for k, v in expected.items() if info.get(k) != v}
    if wrong:
        raise ContainerStageError(f"metadata mismatch: served {wrong}, expected {expected}")


def check_parity(url: str, images: np.ndarray, expected: np.ndarray, batch: int = 100) -> tuple[int, float]:
    """Send held-out images; return (top-1 mismatches, max probability difference) vs the pipeline."""
    served = np.concatenate(
        [np.asarray(_post_json(url, {"images": images[i : i + batch].tolist()})["result"])
         for i in range(0, len(images), batch)]
    )  # fmt: skip
    return int((served.argmax(1) != expected.argmax(1)).sum()), float(np.abs(served - expected).max())


def load_burst(url: str, body: bytes, requests: int, concurrency: int, timeout: float = 120) -> dict:
    """A bounded burst: exactly `requests` POSTs over `concurrency` keep-alive connections, stopped at
    `timeout` seconds whatever happens."""
    parts = urlsplit(url)
    host, port, path = parts.hostname, parts.port, parts.path
    latencies: list[float] = []
    errors = 0
    remaining = [requests]
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def worker() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection(host, port, timeout=10)
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=10)
            with lock:
                latencies.append(time.perf_counter() - started)
                errors += not ok
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 15)
    seconds = time.perf_counter() - started
    done = len(latencies)
    errors += requests - done  # requests never sent before the deadline count as failures
    ms = np.asarray(latencies or [0.0]) * 1000
    return {"load_requests": done, "load_errors": errors, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests_per_s": done / seconds if seconds else 0.0}  # fmt: skip


def probe_latencies(url: str, body: bytes, seconds: float, interval: float = 0.02) -> tuple[list[float], int]:
    """Single requests one at a time, each on a fresh connection, for `seconds`: how a normal client
    fares while something else loads the server. Returns (latencies in seconds, failures)."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            _post(url, body, timeout=5)
            latencies.append(time.perf_counter() - started)
        except OSError:
            failures += 1
        time.sleep(interval)
    return latencies, failures


def _post(url: str, body: bytes, timeout: float) -> bytes:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def smoke_test(
    base_url: str,
    name: str,
    version: int,
    number_of_parameters: int,
    images: np.ndarray,
    expected: np.ndarray,
    load_requests: int = 2000,
    concurrency: int = 8,
    tolerance: float = 1e-4,
) -> SmokeReport:
    """Metadata, prediction parity with the pipeline, then a bounded load burst with zero errors allowed."""
    report = SmokeReport()
    check_metadata(base_url, name, version, number_of_parameters)
    url = f"{base_url}/models/{name}/v{version}"
    report.top1_mismatches, report.max_probability_diff = check_parity(url, images, expected)
    report.parity_images = len(images)
    if report.top1_mismatches or report.max_probability_diff > tolerance:
        raise ContainerStageError(
            f"parity failed on {len(images)} images: {report.top1_mismatches} top-1 mismatches, "
            f"max probability difference {report.max_probability_diff:.2e} (tolerance {tolerance:.0e})"
        )
    burst = load_burst(url, orjson.dumps({"image": images[0].tolist()}), load_requests, concurrency)
    for key, value in burst.items():
        setattr(report, key, value)
    if report.load_errors:
        raise ContainerStageError(f"load burst: {report.load_errors} of {load_requests} requests failed")
    return report


# --- deploy ------------------------------------------------------------------------------------------


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
    for old in previous:
        old.stop(timeout=30)
        old.remove()
    return container
