"""The QA gate of the release: the candidate's image on a private port, checked for metadata, parity
with the pipeline's own predictions, and a bounded load burst with zero errors allowed."""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.load_generator import load_burst, post
from tasks.network import free_port
from tasks.params import ContainerParams, ModelRef
from tasks.release.docker_engine import (
    HARDENING,
    LABEL,
    ContainerStageError,
    require_docker,
    wait_container_ready,
)
from tasks.release.image import ImageInfo
from tasks.settings import Settings


def start_qa_container(client, image: str, name: str, labels: dict[str, str]) -> tuple[Any, str]:
    """The candidate on a free loopback port, bridge network; returns (container, base URL)."""
    port = free_port()
    container = client.containers.run(
        image,
        detach=True,
        name=name,
        labels={**labels, f"{LABEL}.role": "qa"},
        ports={"8080/tcp": ("127.0.0.1", port)},
        environment={"MLOPS_SERVE_WORKERS": "2"},
        **HARDENING,
    )
    return container, f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class ParityCheck:
    """What the smoke test compares the container's answers with: images (the test split) and the
    pipeline's own probabilities for them, and the parameter count the container must report."""

    images: np.ndarray
    expected: np.ndarray
    parameters: int


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

    def summary(self) -> str:
        """The registry's one-line verdict; the figures are metrics of the run."""
        agree = self.parity_images - self.top1_mismatches
        return (
            f"parity {agree}/{self.parity_images}, {self.load_errors}/{self.load_requests} errors, "
            f"p99 {self.p99_ms:.1f} ms, {self.requests_per_s:,.0f} req/s"
        )


def _post_json(url: str, body: object, timeout: float = 30) -> dict:
    return orjson.loads(post(url, orjson.dumps(body), timeout))


def check_metadata(base_url: str, ref: ModelRef, number_of_parameters: int) -> None:
    with urllib.request.urlopen(f"{base_url}/models/{ref.name}/v{ref.version}", timeout=10) as response:
        info = orjson.loads(response.read())
    expected = {"name": ref.name, "version": ref.version, "number_of_parameters": number_of_parameters}
    wrong = {k: info.get(k) for k, v in expected.items() if info.get(k) != v}
    if wrong:
        raise ContainerStageError(f"metadata mismatch: served {wrong}, expected {expected}")


def check_parity(url: str, images: np.ndarray, expected: np.ndarray, batch: int = 100) -> tuple[int, float]:
    """Send held-out images; return (top-1 mismatches, max probability difference) vs the pipeline."""
    served = np.concatenate(
        [
            np.asarray(_post_json(url, {"images": images[i : i + batch].tolist()})["result"])
            for i in range(0, len(images), batch)
        ]
    )
    return int((served.argmax(1) != expected.argmax(1)).sum()), float(np.abs(served - expected).max())


def smoke_test(
    base_url: str,
    ref: ModelRef,
    number_of_parameters: int,
    images: np.ndarray,
    expected: np.ndarray,
    load_requests: int = 2000,
    concurrency: int = 8,
    tolerance: float = 1e-4,
) -> SmokeReport:
    """Metadata, prediction parity with the pipeline, then a bounded load burst with zero errors allowed."""
    report = SmokeReport()
    check_metadata(base_url, ref, number_of_parameters)
    url = f"{base_url}/models/{ref.name}/v{ref.version}"
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


@task(name="smoke-test", task_run_name="smoke-test-{image.tag}", cache_policy=NO_CACHE)
def smoke_test_task(
    image: ImageInfo, ref: ModelRef, parity: ParityCheck, params: ContainerParams, settings: Settings
) -> SmokeReport:
    """A QA deployment of the candidate; the container is removed whatever happens. Its answers for the
    first `params.parity_images` of the parity images must match the pipeline's own."""
    logger = get_run_logger()
    client = require_docker()
    container, base_url = start_qa_container(client, image.id, f"{settings.deploy.name}-qa-v{ref.version}", {})
    try:
        ready = wait_container_ready(container, base_url, settings.release.ready_timeout)
        logger.info("QA container %s ready in %.2f s at %s", container.name, ready, base_url)
        n = params.parity_images
        report = smoke_test(
            base_url,
            ref,
            parity.parameters,
            parity.images[:n],
            parity.expected[:n],
            load_requests=params.load_requests,
            concurrency=params.load_concurrency,
        )
        report.ready_seconds = ready
    finally:
        container.remove(force=True)
    logger.info("smoke test passed: %s", asdict(report))
    return report
