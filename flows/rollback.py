"""`rollback`: put the previous champion back into production and move the alias back to it."""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from flows.cli import console_script, flow_app
from tasks.release import deploy_task, restore_champion_task, rollback_target_task, with_other_models_task
from tasks.settings import Settings


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
    return {
        "model_name": target.name,
        "from_version": str(current.version),
        "to_version": str(target.version),
        "container": container,
    }


app = flow_app(rollback, "clothes-rollback")
main = console_script(app)

if __name__ == "__main__":
    sys.exit(main())
