"""`rollback`: put the previous champion back into production and move the alias back to it."""

from __future__ import annotations

import sys

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.cli import console_script, flow_app
from tasks.params import ModelRef
from tasks.registry import champion_version, configure_mlflow, promote_version
from tasks.release import (
    ContainerStageError,
    deploy_task,
    ensure_local,
    released_image,
    require_docker,
    tag_champion,
    with_other_models_task,
)
from tasks.settings import Settings


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


@flow(name="rollback")
def rollback(model_name: str | None = None) -> dict:
    """Redeploy the previous champion's image and move `champion` back to it.

    Parameters
    ----------
    model_name
        Unset: MLOPS_MODEL_NAME ('clothes').
    """
    settings = Settings()
    current, target, image = rollback_target_task(model_name or settings.tracking.model_name, settings)
    image = with_other_models_task(image, target, settings)  # the other models stay as production serves them
    container = deploy_task(image, target, settings)
    restore_champion_task(current, target, image, settings)
    get_run_logger().info("rolled back %s from v%s to v%s (%s)", target.name, current.version, target.version, image)
    return {"model_name": target.name, "from_version": str(current.version), "to_version": str(target.version),
            "container": container}  # fmt: skip


app = flow_app(rollback, "clothes-rollback")
main = console_script(app)

if __name__ == "__main__":
    sys.exit(main())
