"""The `swarm` deploy target on a real single-node swarm: replicas, rolling updates under traffic, a
killed replica, swarm's own rollback of a failing image, and the rollback flow."""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
import uuid

import orjson
import pytest
from mlflow import MlflowClient

from tasks.network import free_port
from tasks.release.deploy import deploy, deploy_replicas
from tasks.release.docker_engine import LABEL, ContainerStageError
from tasks.release.image import build_serving_image
from tasks.release.targets.docker import production_containers
from tasks.release.targets.swarm import production_service, running_tasks, swarm_manager
from tasks.settings import Settings
from tasks.tracking import CHAMPION, configure_mlflow
from tests.conftest import require
from tests.traffic import Traffic, served_version

pytestmark = [pytest.mark.docker, pytest.mark.slow]
CLIENTS = 4


@pytest.fixture(scope="module")
def swarm(docker_engine):
    """The engine as a swarm manager; a swarm this fixture created is left again afterwards."""
    state = docker_engine.info()["Swarm"]["LocalNodeState"]
    if state == "inactive":
        docker_engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    elif not swarm_manager(docker_engine):
        require("swarm", f"this engine is a swarm node ({state}) but not a manager: services cannot be made here")
    yield docker_engine
    if state == "inactive":
        docker_engine.swarm.leave(force=True)


@pytest.fixture(scope="module")
def images(swarm, model_root, tmp_path_factory):
    """Three images of one name: v1 and v2 serve those versions; `broken` holds a model that cannot load."""
    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("swarm-images")
    settings = Settings()
    broken = work / "broken" / "clothes" / "3"
    shutil.copytree(model_root / "clothes" / "2", broken)
    (broken / "model.tflite").write_bytes(b"this is not a TFLite model")
    tags = {}
    for tag, model_dir in {
        "1": model_root / "clothes" / "1",
        "2": model_root / "clothes" / "2",
        "broken": broken,
    }.items():
        tags[tag] = f"{name}:{tag}"
        build_serving_image(
            swarm,
            [model_dir],
            tags[tag],
            wheelhouse_dir=settings.release.wheelhouse_dir,
            base_image=settings.release.base_image,
        )
    yield tags
    for image in swarm.images.list(name=name):
        swarm.images.remove(image.id, force=True)


@pytest.fixture
def settings(swarm, tmp_path, monkeypatch) -> Settings:
    name = f"clothes-test-{uuid.uuid4().hex[:8]}"
    for key, value in {
        "MLOPS_DEPLOY_TARGET": "swarm",
        "MLOPS_DEPLOY_NAME": name,
        "MLOPS_DEPLOY_PORT": str(free_port()),
        "MLOPS_DEPLOY_REPLICAS": "2",
        "MLOPS_DEPLOY_TIMEOUT": "60",
        "MLOPS_PREDICTION_LOG_DIR": str(tmp_path / "logs"),
    }.items():
        monkeypatch.setenv(key, value)
    yield Settings()
    service = production_service(swarm, name)
    if service is not None:
        service.remove()
    for secret in swarm.secrets.list(filters={"name": name}):
        secret.remove()
    for container in swarm.containers.list(all=True, filters={"name": name}):
        container.remove(force=True)


def feedback_statuses(port: int, count: int) -> list[int]:
    """Classify and label `count` times, each on a new connection (so both replicas issue and verify)."""
    statuses = []
    for _ in range(count):
        answer = post(f"http://127.0.0.1:{port}/models/clothes/v2", {"image": [[0] * 28] * 28})
        body = {"id": answer["predictions"][0]["id"], "label": "Bag"}
        try:
            post(f"http://127.0.0.1:{port}/models/clothes/v2/feedback", body)
            statuses.append(202)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    return statuses


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, orjson.dumps(body), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


def wait_for_replicas(service, image: str, replicas: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(running_tasks(service, image)) < replicas:
        assert time.monotonic() < deadline, f"fewer than {replicas} replicas of {image} after {timeout} s"
        time.sleep(0.5)


def test_rolling_update_killed_replica_and_failed_update(swarm, images, settings):
    lines: list[str] = []
    assert deploy_replicas(swarm, images["1"], 1, settings, lines.append) == settings.deploy.name
    service = production_service(swarm, settings.deploy.name)
    assert len(running_tasks(service, images["1"])) == 2
    assert served_version(settings.deploy.port) == 1
    template = service.attrs["Spec"]["TaskTemplate"]
    assert template["ContainerSpec"]["ReadOnly"]
    assert template["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    assert template["Resources"]["Limits"] == {"MemoryBytes": 1 << 30, "NanoCPUs": 10**9, "Pids": 256}
    assert service.attrs["Spec"]["Labels"][f"{LABEL}.version"] == "1"
    update = service.attrs["Spec"]["UpdateConfig"]
    assert update["Order"] == "start-first"
    assert update["FailureAction"] == "rollback"

    with Traffic(settings.deploy.port, CLIENTS) as during_update:
        deploy_replicas(swarm, images["2"], 2, settings, lines.append)
    assert during_update.failures == [], during_update.failures[:3]
    assert during_update.ok > 50, during_update.failures[:3]
    assert set(during_update.versions) == {1, 2}
    assert served_version(settings.deploy.port) == 2
    service.reload()
    (secret,) = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert secret["SecretName"] == f"{settings.deploy.name}-feedback-key"
    assert secret["File"]["UID"] == "10001"
    assert feedback_statuses(settings.deploy.port, 8) == [202] * 8  # ids from either replica, labelled at either

    victim = swarm.containers.get(running_tasks(service, images["2"])[0]["Status"]["ContainerStatus"]["ContainerID"])
    with Traffic(settings.deploy.port, CLIENTS) as during_kill:
        time.sleep(1)
        victim.kill()
        time.sleep(2)
    # Only requests the killed replica held (accepted or in its queue) may fail: at most one per client.
    assert len(during_kill.failures) <= CLIENTS, during_kill.failures
    assert during_kill.ok > 20, during_kill.failures
    wait_for_replicas(service, images["2"], 2)
    started = time.monotonic()
    deploy_replicas(swarm, images["2"], 2, settings, lines.append)  # what runs already: nothing to roll
    assert time.monotonic() - started < 15

    failing = pytest.raises(ContainerStageError, match=r"rolled the update of .* back")
    with Traffic(settings.deploy.port, CLIENTS) as during_failed_update, failing:
        deploy_replicas(swarm, images["broken"], 3, settings, lines.append)
    assert during_failed_update.failures == []
    assert set(during_failed_update.versions) == {2}
    service.reload()
    assert service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == images["2"]
    wait_for_replicas(service, images["2"], 2)
    named = (LOG_FILE.match(p.name) for p in settings.monitor.prediction_log_dir.glob("predictions-*"))
    hosts = {found["host"] for found in named if found}
    assert len(hosts) >= 4, f"each task writes its own prediction log files: {hosts}"


# A worker's file, written (predictions-<host>-<pid>.jsonl) or rotated (...-<opened ns>.jsonl[.gz]).
LOG_FILE = re.compile(r"^predictions-(?P<host>.+?)-\d+(-\d{19})?\.jsonl(\.gz)?$")


def deploy_container(engine, image: str, version: int, settings: Settings):
    """The docker target's deployment of `image`, where the swarm target's service would run."""
    deploy_settings = settings.deploy
    return deploy(
        engine,
        image,
        version,
        model="clothes",
        deploy_name=deploy_settings.name,
        host=deploy_settings.host,
        port=deploy_settings.port,
        log_dir=settings.monitor.prediction_log_dir,
        ready_timeout=60,
        log=print,
    )


def test_switching_targets_and_the_rollback_flow(swarm, images, settings, mlflow_store, prefect_harness, monkeypatch):
    """docker -> swarm -> rollback on swarm -> docker: each target retires the other's deployment."""
    from flows.rollback import rollback

    container = deploy_container(swarm, images["1"], 1, settings)
    assert served_version(settings.deploy.port) == 1
    configure_mlflow(Settings())  # the test's own store (mlflow_store)
    client = MlflowClient()
    client.create_registered_model("clothes")
    for version, tag in ((1, images["1"]), (2, images["2"])):
        client.create_model_version("clothes", source=f"file:///nowhere/{version}")
        client.set_model_version_tag("clothes", str(version), "image", tag)
    client.set_model_version_tag("clothes", "2", "previous_champion", "1")
    client.set_registered_model_alias("clothes", CHAMPION, "2")

    with Traffic(settings.deploy.port, CLIENTS) as during_switch:
        deploy_replicas(swarm, images["2"], 2, settings, print)
    assert during_switch.failures == []
    assert set(during_switch.versions) == {1, 2}
    assert production_containers(swarm, settings.deploy.name) == []
    assert not [c for c in swarm.containers.list(all=True) if c.id == container.id]

    monkeypatch.setenv("MLOPS_IMAGE_NAME", images["1"].split(":")[0])
    result = rollback()
    assert result["to_version"] == "1"
    assert result["container"] == settings.deploy.name
    assert served_version(settings.deploy.port) == 1
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"

    with Traffic(settings.deploy.port, CLIENTS) as back_to_docker:
        deploy_container(swarm, images["2"], 2, settings)
    assert back_to_docker.failures == [], back_to_docker.failures[:3]
    assert production_service(swarm, settings.deploy.name) is None
    assert served_version(settings.deploy.port) == 2
