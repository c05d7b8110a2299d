"""`rollback`: put the previous champion back into production and move the alias back to it."""

from __future__ import annotations

import argparse
import sys

from mlflow import MlflowClient
from prefect import flow, get_run_logger

from flows.cli import run_and_report
from tasks.container import ContainerStageError
from tasks.registry import champion_version, configure_mlflow, promote_version
from tasks.release import deploy_task, released_image, require_docker, tag_champion
from tasks.settings import Settings


@flow(name="rollback")
def rollback(model_name: str | None = None) -> dict:
    """Fails without touching anything when there is no previous champion or its image is gone."""
    settings = Settings()
    name = model_name or settings.model_name
    configure_mlflow(settings)
    current = champion_version(name)
    if current is None:
        raise ContainerStageError(f"model '{name}' has no champion to roll back from")
    target = current.tags.get("previous_champion")
    if not target:
        raise ContainerStageError(f"{name} v{current.version} has no previous champion to roll back to")
    image = released_image(MlflowClient().get_model_version(name, target), settings)
    docker = require_docker()
    docker.images.get(image)  # raises ImageNotFound before anything changes
    container = deploy_task(image, target, settings)
    promote_version(name, target, {"rolled_back_from": str(current.version)}, record_previous=False)
    tag_champion(docker, image, settings)
    get_run_logger().info("rolled back %s from v%s to v%s (%s)", name, current.version, target, image)
    return {"model_name": name, "from_version": str(current.version), "to_version": target, "container": container}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clothes-rollback", description=rollback.__doc__)
    parser.add_argument("--model-name")
    args = parser.parse_args(argv)
    return run_and_report(rollback, model_name=args.model_name)


if __name__ == "__main__":
    sys.exit(main())
