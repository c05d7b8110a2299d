"""Rollback's steps: find the champion before the current one and its image, then move `champion` (the
alias and the image tag) back to it once it serves."""

from __future__ import annotations

from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.params import ModelRef
from tasks.registry import promote_version
from tasks.release.deploy import released_image, tag_champion
from tasks.release.docker_engine import ContainerStageError, require_docker
from tasks.release.registry import ensure_local
from tasks.settings import Settings
from tasks.tracking import champion_version, configure_mlflow


@task(name="find-rollback-target", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def rollback_target_task(name: str, settings: Settings) -> tuple[ModelRef, ModelRef, str]:
    """(current champion, the champion before it, that one's image); fails when there is nothing to
    return to or its image is gone, before anything changes."""
    configure_mlflow(settings)
    current = champion_version(name)
    if current is None:
        raise ContainerStageError(f"model '{name}' has no champion to roll back from")
    target = current.tags.get("previous_champion")
    if not target:
        raise ContainerStageError(f"{name} v{current.version} has no previous champion to roll back to")
    image = released_image(MlflowClient().get_model_version(name, target), settings)
    ensure_local(require_docker(), image, settings.release)  # raises ImageNotFound
    return ModelRef(name, int(current.version)), ModelRef(name, int(target)), image


@task(name="move-champion-back", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def restore_champion_task(current: ModelRef, target: ModelRef, image: str, settings: Settings) -> None:
    promote_version(target, {"rolled_back_from": str(current.version)}, record_previous=False)
    tag_champion(require_docker(), image, settings)
