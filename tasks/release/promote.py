"""Promotion, the release's last step: alias `champion` in MLflow and `:champion` on the image, with
every release figure recorded on the candidate's run."""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.events import RELEASE_DECIDED, emit
from tasks.params import ModelRef
from tasks.registry.policy import promote_version
from tasks.release.deploy import tag_champion
from tasks.release.docker_engine import require_docker
from tasks.release.image import ImageInfo
from tasks.release.smoke import SmokeReport
from tasks.settings import Settings


@task(
    name="promote",
    task_run_name="promote-v{ref.version}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
)
def promote_task(
    ref: ModelRef, run_id: str, image: ImageInfo, runs_as: str, report: SmokeReport, settings: Settings
) -> None:
    """Alias `champion` in MLflow and tag `:champion` on the image; every figure on the run (metrics),
    the image production runs (by digest when it was pushed) and a one-line smoke verdict on the version."""
    figures = {**report.as_metrics(), "image_size_mb": image.size_mb, "image_build_seconds": image.build_seconds}
    client = MlflowClient()
    for key, value in figures.items():
        client.log_metric(run_id, key, value)
    previous = promote_version(ref, {"image": runs_as, "smoke": report.summary()})
    tag_champion(require_docker(), image.id, settings)
    create_table_artifact(
        [{"figure": key, "value": float(f"{value:.4g}")} for key, value in figures.items()],
        key="release",
        description=f"{ref} is champion (was {previous or 'none'}): image {runs_as} ({image.id[:19]})",
    )
    get_run_logger().info("promoted %s to champion (previous: %s)", ref, previous)
    emit(
        RELEASE_DECIDED,
        ref.name,
        f"{ref} is champion (was {previous or 'none'}): {runs_as}",
        outcome="promoted",
        version=ref.version,
        image=runs_as,
    )
