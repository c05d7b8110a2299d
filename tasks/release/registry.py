"""Push the smoke-tested image to the team's registry (MLOPS_REGISTRY) and name it by digest from then
on: `<registry>/<image>@sha256:...` is exactly the bytes the smoke test ran, on every node, in every
manifest and in the version's `image` tag. Without a registry the image stays on this engine, by tag."""

from __future__ import annotations

from collections.abc import Callable

from docker.errors import APIError, ImageNotFound
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.params import ModelRef
from tasks.release.docker_engine import ContainerStageError, require_docker
from tasks.release.image import ImageInfo
from tasks.settings import ReleaseSettings, Settings

Log = Callable[[str], None]


def log_in(client, release: ReleaseSettings) -> None:
    """Credentials for this client only (kept in memory, not in ~/.docker): pushes send them, and
    swarm services created through the client pass them on to the nodes that pull."""
    if not release.registry or not release.registry_username:
        return
    password = release.registry_password.get_secret_value() if release.registry_password else ""
    try:
        client.login(release.registry_username, password, registry=release.registry, reauth=True)
    except APIError as exc:
        raise ContainerStageError(f"registry {release.registry} refused the login: {exc.explanation}") from exc


def ensure_local(client, reference: str, release: ReleaseSettings):  # -> docker.models.images.Image
    """The image `reference` names, pulled from the registry when this engine has not got it (a release
    made on another machine); raises ImageNotFound when neither has it."""
    try:
        return client.images.get(reference)
    except ImageNotFound:
        if "@sha256:" not in reference:
            raise
    log_in(client, release)
    return client.images.pull(reference)


def push(client, image_id: str, repository: str, tag: str, log: Log) -> str:
    """Tag `image_id` as repository:tag, push it and return `repository@sha256:...`."""
    client.images.get(image_id).tag(repository, tag)
    digest = None
    for chunk in client.images.push(repository, tag, stream=True, decode=True):
        if "error" in chunk:
            raise ContainerStageError(f"pushing {repository}:{tag} failed: {chunk['error'].strip()}")
        digest = chunk.get("aux", {}).get("Digest", digest)
        if chunk.get("status") and "id" not in chunk:
            log(chunk["status"])
    if digest is None:
        raise ContainerStageError(f"the registry did not report a digest for {repository}:{tag}")
    return f"{repository}@{digest}"


def push_release(client, image_id: str, tag: str, release: ReleaseSettings, log: Log) -> str:
    """`image_id` in the team's registry as `<registry>/<image name>:<tag's own tag>`; its digest reference."""
    log_in(client, release)
    repository = f"{release.registry}/{release.image_name}"
    return push(client, image_id, repository, tag.rsplit(":", 1)[1], log)


@task(
    name="push-image",
    task_run_name="push-image-v{ref.version}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
)
def push_image_task(image: ImageInfo, ref: ModelRef, settings: Settings) -> str:
    """The smoke-tested image in the registry; returns the reference every later step runs."""
    logger = get_run_logger()
    reference = push_release(require_docker(), image.id, image.tag, settings.release, logger.info)
    logger.info("pushed %s as %s", image.tag, reference)
    return reference
