"""Deploy a smoke-tested image to production on the configured target (`tasks.release.targets`): the
target starts its own replacement, and once that is ready the other target's deployment is retired, so
switching targets costs no downtime."""

from __future__ import annotations

from collections.abc import Callable

from mlflow.entities.model_registry import ModelVersion
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.params import ModelRef
from tasks.release.capture import CaptureTarget
from tasks.release.docker_engine import enable_listener_migration, prepare_log_dir, require_docker, retire
from tasks.release.registry import log_in
from tasks.release.served_models import image_tag
from tasks.release.targets.docker import blue_green, production_containers
from tasks.release.targets.swarm import deploy_service, remove_service, swarm_manager
from tasks.settings import Settings

Log = Callable[[str], None]


def deploy(client, image: str, version: int, *, deploy_name: str, log: Log, **blue_green_args):
    """The `docker` target: the blue/green container, then the `swarm` target's service retired."""
    container = blue_green(client, image, version, deploy_name=deploy_name, log=log, **blue_green_args)
    if swarm_manager(client) and remove_service(client, deploy_name):
        log(f"removed the swarm service {deploy_name}")
    return container


def deploy_replicas(client, image: str, version: int, settings: Settings, log: Log) -> str:
    """The `swarm` target: roll the service onto `image`, then retire the `docker` target's container."""
    enable_listener_migration()
    name = deploy_service(
        client,
        image,
        version,
        timeout=settings.deploy.timeout,
        log=log,
        deploy_name=settings.deploy.name,
        host=settings.deploy.host,
        port=settings.deploy.port,
        replicas=settings.deploy.replicas,
        mode=settings.deploy.mode,
        cpus=settings.deploy.cpus,
        log_dir=prepare_log_dir(settings.monitor.prediction_log_dir),
        capture=CaptureTarget.configured(settings),
    )
    previous = production_containers(client, settings.deploy.name)
    if previous:
        log(f"retiring {[c.name for c in previous]}: the service {name} serves the port now")
    retire(previous)
    return name


def released_image(version: ModelVersion, settings: Settings) -> str:
    """The image a registered version was released as: the tag promotion recorded, else its build tag."""
    return version.tags.get("image") or image_tag(settings, ModelRef(version.name, int(version.version)))


def tag_champion(client, image: str, settings: Settings) -> None:
    """`<image name>:champion` always names the image production should be running."""
    client.images.get(image).tag(settings.release.image_name, "champion")


@task(name="deploy", task_run_name="deploy-{image_tag}", cache_policy=NO_CACHE)
def deploy_task(image_tag: str, ref: ModelRef, settings: Settings) -> str:
    """The container (docker) or service (swarm) now serving `image_tag` (a tag, or a digest in the registry)."""
    logger = get_run_logger()
    client = require_docker()
    log_in(client, settings.release)  # other nodes pull with these credentials
    if settings.deploy.target == "swarm":
        name = deploy_replicas(client, image_tag, ref.version, settings, logger.info)
    else:
        name = deploy(
            client,
            image_tag,
            ref.version,
            model=ref.name,
            deploy_name=settings.deploy.name,
            host=settings.deploy.host,
            port=settings.deploy.port,
            log_dir=settings.monitor.prediction_log_dir,
            ready_timeout=settings.release.ready_timeout,
            log=logger.info,
            capture=CaptureTarget.configured(settings),
        ).name
    logger.info(
        "production (%s): %s serving %s on http://%s:%d",
        settings.deploy.target,
        name,
        image_tag,
        settings.deploy.host,
        settings.deploy.port,
    )
    return name
