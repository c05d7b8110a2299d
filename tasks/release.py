"""Prefect tasks of the container stage: build, smoke test (QA), deploy, promote."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.container import (
    LABEL,
    PROJECT_DIR,
    ContainerStageError,
    SmokeReport,
    build_context,
    build_image,
    deploy,
    ensure_wheelhouse,
    serving_requirements,
    smoke_test,
    start_qa_container,
    wait_container_ready,
)
from tasks.registry import promote_version
from tasks.settings import Settings


class ContainerParams(BaseModel):
    enabled: bool | None = Field(default=None, description="unset: run the stage when a Docker engine answers")
    deploy: bool = Field(default=True, description="start the production container after the smoke test")
    parity_images: int = Field(default=200, ge=1, le=10_000)
    load_requests: int = Field(default=2000, ge=0, le=100_000)
    load_concurrency: int = Field(default=8, ge=1, le=64)


@dataclass
class ImageInfo:
    tag: str
    id: str
    size_mb: float
    build_seconds: float


def docker_client():
    """A client for the local engine, or None when no engine answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=300)
        client.ping()
        return client
    except DockerException:
        return None


def require_docker():
    client = docker_client()
    if client is None:
        raise ContainerStageError("no Docker engine answers (scripts/docker-engine.sh up starts one)")
    return client


def released_image(version: ModelVersion, settings: Settings) -> str:
    """The image a registered version was released as: the tag promotion recorded, else its build tag."""
    return version.tags.get("image", f"{settings.image_name}:{version.version}")


def tag_champion(client, image: str, settings: Settings) -> None:
    """`<image name>:champion` always names the image production should be running."""
    client.images.get(image).tag(settings.image_name, "champion")


@task(
    name="build-image", task_run_name="build-image-v{version}", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5
)
def build_image_task(name: str, version: str, model_dir: Path, run_id: str, settings: Settings) -> ImageInfo:
    logger = get_run_logger()
    client = require_docker()
    requirements = serving_requirements()
    wheelhouse = ensure_wheelhouse(settings.wheelhouse_dir, requirements, PROJECT_DIR / "constraints.txt")
    tag = f"{settings.image_name}:{version}"
    labels = {f"{LABEL}.model": name, f"{LABEL}.version": str(version), f"{LABEL}.mlflow-run-id": run_id}
    with tempfile.TemporaryDirectory(prefix="clothes-build-") as tmp:
        context = build_context(Path(tmp), [Path(model_dir)], wheelhouse, requirements)
        image_id, seconds = build_image(client, context, tag, settings.base_image, labels, logger.info)
    size_mb = client.images.get(image_id).attrs["Size"] / 1e6
    logger.info("built %s (%s, %.0f MB) in %.1f s", tag, image_id[:19], size_mb, seconds)
    return ImageInfo(tag, image_id, size_mb, seconds)


@task(name="smoke-test", task_run_name="smoke-test-{image.tag}", cache_policy=NO_CACHE)
def smoke_test_task(
    image: ImageInfo,
    name: str,
    version: str,
    number_of_parameters: int,
    images: np.ndarray,
    expected: np.ndarray,
    params: ContainerParams,
    settings: Settings,
) -> SmokeReport:
    """A QA deployment of the candidate; the container is removed whatever happens."""
    logger = get_run_logger()
    client = require_docker()
    container, base_url = start_qa_container(client, image.id, f"{settings.deploy_name}-qa-v{version}", {})
    try:
        ready = wait_container_ready(container, base_url, settings.ready_timeout)
        logger.info("QA container %s ready in %.2f s at %s", container.name, ready, base_url)
        report = smoke_test(
            base_url, name, int(version), number_of_parameters, images, expected,
            load_requests=params.load_requests, concurrency=params.load_concurrency,
        )  # fmt: skip
        report.ready_seconds = ready
    finally:
        container.remove(force=True)
    logger.info("smoke test passed: %s", asdict(report))
    return report


@task(name="deploy", task_run_name="deploy-{image_tag}", cache_policy=NO_CACHE)
def deploy_task(image_tag: str, version: str, settings: Settings) -> str:
    logger = get_run_logger()
    container = deploy(
        require_docker(), image_tag, int(version), deploy_name=settings.deploy_name, host=settings.deploy_host,
        port=settings.deploy_port, log_dir=settings.prediction_log_dir, ready_timeout=settings.ready_timeout,
        log=logger.info,
    )  # fmt: skip
    logger.info("production: %s serving %s on http://%s:%d", container.name, image_tag, settings.deploy_host,
                settings.deploy_port)  # fmt: skip
    return container.name


@task(name="promote", task_run_name="promote-v{version}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def promote_task(
    name: str, version: str, run_id: str, image: ImageInfo, report: SmokeReport, settings: Settings
) -> None:
    """Alias `champion` in MLflow and tag `:champion` on the image, with every figure on the version."""
    figures = {**report.as_metrics(), "image_size_mb": image.size_mb, "image_build_seconds": image.build_seconds}
    client = MlflowClient()
    for key, value in figures.items():
        client.log_metric(run_id, key, value)
    tags = {"image": image.tag, "image_id": image.id, **{k: f"{v:.4g}" for k, v in figures.items()}}
    previous = promote_version(name, version, tags)
    tag_champion(require_docker(), image.id, settings)
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in figures.items())
    create_markdown_artifact(
        key="release", description="container smoke test and promotion",
        markdown=f"## {name} v{version} is champion (was {previous or 'none'})\n\nimage `{image.tag}` "
                 f"({image.id[:19]})\n\n| figure | value |\n|---|---|\n{rows}\n",
    )  # fmt: skip
    get_run_logger().info("promoted %s v%s to champion (previous: %s)", name, version, previous)
