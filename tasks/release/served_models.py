"""Production is one server for every model, as TF Serving serves several: releasing one model builds
an image with its new version *and* the versions production serves now of every other model, copied
out of the running production image. So `own-clothes` going live leaves the `clothes` champion answering
exactly as before (the same files), and a release never needs the other models' exports on this machine."""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.params import ModelRef
from tasks.release.docker_engine import LABEL, docker_name, require_docker
from tasks.release.image import ImageInfo, baked_settings, build_serving_image
from tasks.release.registry import ensure_local, push_release
from tasks.release.targets.docker import production_containers
from tasks.release.targets.swarm import production_service, swarm_manager
from tasks.settings import Settings

IMAGE_MODEL_ROOT = "/models"  # Dockerfile.serve copies the models there


def image_tag(settings: Settings, ref: ModelRef) -> str:
    """`<image name>:<model>-<version>`: two models' version 1 are two images."""
    return f"{settings.release.image_name}:{docker_name(ref.name)}-{ref.version}"


def production_image(client, settings: Settings) -> str | None:
    """The image production runs now, on either target; None when nothing serves."""
    containers = production_containers(client, settings.deploy.name)
    if containers:
        return containers[0].attrs["Image"]  # the image's id
    service = production_service(client, settings.deploy.name) if swarm_manager(client) else None
    if service is not None:
        return service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    return None


@task(name="production-image", cache_policy=NO_CACHE)
def production_image_task(settings: Settings) -> str | None:
    return production_image(require_docker(), settings)


def copy_models(client, image: str, into: Path, wanted: Callable[[str], bool]) -> list[Path]:
    """Every `<name>/<version>` directory under the image's model root whose name is `wanted`, copied to
    `into/<name>/<version>`; returns them. The image is read through a container that never starts."""
    container = client.containers.create(image, command=["true"])
    try:
        stream, _stat = container.get_archive(IMAGE_MODEL_ROOT)
        archive = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    copied = set()
    with tarfile.open(fileobj=archive) as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts  # ("models", name, version, ...)
            if len(parts) >= 3 and wanted(parts[1]) and (member.isfile() or member.isdir()):
                member.name = str(Path(*parts[1:]))
                members.append(member)
                copied.add(into / parts[1] / parts[2])
        tar.extractall(into, members=members, filter="data")
    return sorted(copied)


def served_labels(ref: ModelRef, model_dirs: list[Path], **more: str) -> dict[str, str]:
    """An image's labels: the model it was released for, and every `<name>:<version>` it serves."""
    served = ",".join(f"{d.parent.name}:{d.name}" for d in model_dirs)
    return {
        f"{LABEL}.model": ref.name,
        f"{LABEL}.version": str(ref.version),
        f"{LABEL}.models": served,
        **{f"{LABEL}.{key}": value for key, value in more.items()},
    }


def other_models(client, settings: Settings, ref: ModelRef, into: Path) -> list[Path]:
    """What production serves now of every model but `ref`'s: the rest of the image a release builds."""
    image = production_image(client, settings)
    if image is None:
        return []
    ensure_local(client, image, settings.release)  # a swarm service's image, by digest, from the registry
    return copy_models(client, image, into, lambda name: name != ref.name)


@task(
    name="build-image",
    task_run_name="build-image-v{ref.version}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=5,
)
def build_image_task(
    ref: ModelRef, model_dir: Path, run_id: str, settings: Settings, serving: dict[str, str] | None = None
) -> ImageInfo:
    """The release's image: `ref`'s export beside every other model production serves, with the server
    settings `serving` (`container.serving`) baked in."""
    logger = get_run_logger()
    client = require_docker()
    tag = image_tag(settings, ref)
    with tempfile.TemporaryDirectory(prefix="clothes-served-") as others:
        model_dirs = [Path(model_dir), *other_models(client, settings, ref, Path(others))]
        labels = served_labels(ref, model_dirs, **{"mlflow-run-id": run_id})
        logger.info("the image serves %s (the other models as production serves them now)", labels[f"{LABEL}.models"])
        image_id, seconds = build_serving_image(
            client,
            model_dirs,
            tag,
            wheelhouse_dir=settings.release.wheelhouse_dir,
            base_image=settings.release.base_image,
            labels=labels,
            log=logger.info,
            serving=serving,
        )
    size_mb = client.images.get(image_id).attrs["Size"] / 1e6
    logger.info("built %s (%s, %.0f MB) in %.1f s", tag, image_id[:19], size_mb, seconds)
    return ImageInfo(tag, image_id, size_mb, seconds)


@task(name="rejoin-other-models", cache_policy=NO_CACHE)
def with_other_models_task(image: str, ref: ModelRef, settings: Settings) -> str:
    """`image` (an earlier release of `ref`'s model, e.g. the one a rollback returns to) as production
    would serve it now: when the other models production serves differ from the ones `image` was built
    with, a new image with `ref`'s directories from `image` and the others from production (pushed to the
    team's registry when there is one)."""
    logger = get_run_logger()
    client = require_docker()
    with tempfile.TemporaryDirectory(prefix="clothes-served-") as tmp:
        in_image = copy_models(client, image, Path(tmp) / "image", lambda _name: True)
        own = [d for d in in_image if d.parent.name == ref.name]
        built_with = [(d.parent.name, d.name) for d in in_image if d.parent.name != ref.name]
        others = other_models(client, settings, ref, Path(tmp) / "others")
        if built_with == [(d.parent.name, d.name) for d in others]:
            return image
        tag = image_tag(settings, ref)
        logger.info("%s was built beside other models than production serves now: rebuilding it as %s", image, tag)
        image_id, _seconds = build_serving_image(
            client,
            own + others,
            tag,
            wheelhouse_dir=settings.release.wheelhouse_dir,
            base_image=settings.release.base_image,
            labels=served_labels(ref, own + others),
            log=logger.info,
            serving=baked_settings(client.images.get(image).labels),  # the settings it was released with
        )
    if settings.release.registry:  # other nodes pull it: by digest, as every release runs there
        return push_release(client, image_id, tag, settings.release, logger.info)
    return image_id
