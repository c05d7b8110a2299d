"""The container stage on a real Docker engine: build, smoke test, promote, blue/green deploy, rollback."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client

from flows.pipeline import train_and_deploy
from flows.rollback import rollback
from ops import registry
from ops.credentials import load_or_create
from ops.seaweedfs import running_store
from ops.stack import Stack, start_registry, stop_process
from ops.tls import CA_CERT
from tasks.network import free_port
from tasks.params import ContainerParams, DataSpec, TrainParams
from tasks.release import export as export_module
from tasks.release.docker_engine import LABEL
from tasks.release.targets.docker import production_containers
from tasks.tracking import CHAMPION
from tests.conftest import LENIENT, require_root
from tests.test_own_photos import DOCUMENTED, OWN_PHOTOS
from tests.traffic import Traffic, served_version

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _params(fashion_dir, seed: int = 1) -> dict:
    return {
        "data": DataSpec(path=fashion_dir, train_limit=3000, test_limit=500, holdout_size=100),
        "train": TrainParams(epochs=1, batch_size=64, seed=seed),
        "thresholds": LENIENT,
        "container": ContainerParams(enabled=True, parity_images=200, load_requests=500),
    }


def test_release_swap_and_rollback(release_env, docker_engine, fashion_dir):
    port = release_env["MLOPS_DEPLOY_PORT"]

    first = train_and_deploy(**_params(fashion_dir))
    assert first["promoted"]
    assert first["image"] == f"{release_env['MLOPS_IMAGE_NAME']}:clothes-1"
    client = MlflowClient()
    v1 = client.get_model_version_by_alias("clothes", CHAMPION)
    assert str(v1.version) == "1"
    assert v1.tags["smoke"].startswith("parity 200/200, 0/500 errors")
    assert set(v1.tags) == {"gates", "test_accuracy", "data.digest", "git_commit", "trigger", "run_id"} | {
        "image",
        "smoke",
    }
    figures = client.get_run(v1.run_id).data.metrics
    assert figures["smoke_load_errors"] == 0
    assert figures["smoke_max_probability_diff"] <= 1e-4
    assert first["smoke"]["parity_images"] == 200
    assert first["smoke"]["load_requests"] == 500
    assert first["deploy_target"] == "docker"
    rendered = Path(client.download_artifacts(v1.run_id, first["kubernetes_manifests"])).read_text()
    assert next(yaml.safe_load_all(rendered))["spec"]["template"]["spec"]["containers"][0]["image"] == first["image"]
    assert served_version(port) == 1
    (production,) = production_containers(docker_engine, release_env["MLOPS_DEPLOY_NAME"])
    host = production.attrs["HostConfig"]
    assert host["Memory"] == 1 << 30
    assert host["PidsLimit"] == 256
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert "/tmp" in host["Tmpfs"]
    image = docker_engine.images.get(first["image"])
    assert image.labels[f"{LABEL}.version"] == "1"
    assert f"{release_env['MLOPS_IMAGE_NAME']}:champion" in image.tags
    assert image.attrs["Config"]["User"] == "clothes"
    assert not docker_engine.containers.list(all=True, filters={"label": f"{LABEL}.role=qa"})
    # The browser pages work in the read-only, non-root image: the upload page and Swagger UI's own assets.
    for path, marker in (("/", b"Clothes classifier"), ("/docs/", b"swagger-ui"), ("/docs/swagger-ui-bundle.js", b"")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as page:
            assert page.status == 200
            assert marker in page.read()

    with Traffic(port) as loop:
        second = train_and_deploy(**_params(fashion_dir, seed=2))
    assert second["promoted"]
    assert second["model_version"] == "2"
    assert loop.failures == [], loop.failures[:3]
    assert loop.ok > 50, loop.failures[:3]
    assert set(loop.versions) == {1, 2}
    assert served_version(port) == 2
    assert [
        c.labels[f"{LABEL}.version"] for c in production_containers(docker_engine, release_env["MLOPS_DEPLOY_NAME"])
    ] == ["2"]
    assert client.get_model_version("clothes", "2").tags["previous_champion"] == "1"

    result = rollback()
    assert result["to_version"] == "1"
    assert result["from_version"] == "2"
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"
    assert served_version(port) == 1
    assert docker_engine.images.get(f"{release_env['MLOPS_IMAGE_NAME']}:champion").id == image.id


def test_releasing_another_model_leaves_the_first_ones_champion_answering(release_env, docker_engine, fashion_dir):
    """docs/own-photos.md's release on a production server that serves `clothes`: one server then answers
    for both, each with its own classes, and `clothes` answered every request throughout, as before."""
    port = release_env["MLOPS_DEPLOY_PORT"]
    assert train_and_deploy(**_params(fashion_dir))["promoted"]
    image = {"image": np.linspace(0, 255, 784).reshape(28, 28).round().tolist()}
    base = f"http://127.0.0.1:{port}"
    before = requests.post(f"{base}/models/clothes/latest", json=image, timeout=10).json()

    with Traffic(port) as loop:
        own = train_and_deploy(**{**DOCUMENTED, "container": ContainerParams(enabled=True, load_requests=200)})
    assert own["promoted"]
    assert own["image"] == f"{release_env['MLOPS_IMAGE_NAME']}:own-clothes-1"
    assert loop.failures == [], loop.failures[:3]
    assert set(loop.versions) == {1}, loop.failures[:3]
    models = requests.get(f"{base}/models", timeout=10).json()["models"]
    assert sorted(m["name"] for m in models) == ["clothes", "own-clothes"]
    assert requests.post(f"{base}/models/clothes/latest", json=image, timeout=10).json()["result"] == before["result"]
    photo = next((OWN_PHOTOS / "test" / "sneaker").iterdir())
    answer = requests.post(f"{base}/models/own-clothes/latest", files={"file": photo.open("rb")}, timeout=10).json()
    assert answer["predictions"][0]["label"] in {p.name for p in (OWN_PHOTOS / "train").iterdir()}
    assert docker_engine.images.get(own["image"]).labels[f"{LABEL}.models"] == "own-clothes:1,clothes:1"

    # clothes v2 goes live beside own-clothes; rolling clothes back to v1, whose image was built before
    # own-clothes existed, rebuilds that image with own-clothes as production serves it.
    assert train_and_deploy(**_params(fashion_dir, seed=2))["promoted"]
    rolled = rollback()
    assert rolled["to_version"] == "1"
    assert served_version(port) == 1
    models = requests.get(f"{base}/models", timeout=10).json()["models"]
    assert {m["name"]: m["versions"] for m in models} == {"clothes": [1], "own-clothes": [1]}
    champion_image = docker_engine.images.get(f"{release_env['MLOPS_IMAGE_NAME']}:champion")
    assert champion_image.labels[f"{LABEL}.models"] == "clothes:1,own-clothes:1"


def test_broken_image_fails_the_smoke_test_and_changes_nothing(release_env, docker_engine, fashion_dir, monkeypatch):
    port = release_env["MLOPS_DEPLOY_PORT"]
    assert train_and_deploy(**_params(fashion_dir))["promoted"]
    production = production_containers(docker_engine, release_env["MLOPS_DEPLOY_NAME"])

    monkeypatch.setattr(export_module, "convert_to_tflite", lambda *_: b"this is not a TFLite model")
    state = train_and_deploy(**_params(fashion_dir, seed=3), return_state=True)
    assert state.is_failed()
    assert "exited before it was ready" in state.message

    client = MlflowClient()
    assert str(client.get_model_version_by_alias("clothes", CHAMPION).version) == "1"
    assert production_containers(docker_engine, release_env["MLOPS_DEPLOY_NAME"]) == production
    assert served_version(port) == 1
    assert not docker_engine.containers.list(all=True, filters={"label": f"{LABEL}.role=qa"})
    assert not [
        c
        for c in docker_engine.containers.list(all=True)
        if "-qa-" in c.name and release_env["MLOPS_DEPLOY_NAME"] in c.name
    ]


def test_with_a_registry_the_release_pushes_the_smoke_tested_image_and_runs_it_by_digest(
    release_env, docker_engine, fashion_dir, tmp_path, monkeypatch
):
    """The digest in the registry's tag, the production container, the version's `image` tag and the
    Kubernetes manifests are one and the same; production claims labels in the object store it was given,
    and neither the registry's password nor the store's secret is recorded anywhere."""
    require_root()  # to trust the registry's CA in /etc/docker/certs.d
    stack = Stack(tmp_path / "stack", registry=True, registry_port=free_port())
    credentials, _ = load_or_create(stack.state_dir)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(registry.untrust, stack.registry_address)
        cleanup.callback(stop_process, stack, "registry")
        start_registry(stack, credentials)
        store = cleanup.enter_context(running_store(tmp_path / "store"))
        for key, value in {
            "MLOPS_REGISTRY": stack.registry_address,
            "MLOPS_REGISTRY_USERNAME": credentials.username,
            "MLOPS_REGISTRY_PASSWORD": credentials.registry_password,
            "MLOPS_CAPTURE_URL": "s3://clothes/production",
            **store.env,
        }.items():
            monkeypatch.setenv(key, value)
        result = train_and_deploy(**_params(fashion_dir))
        name = release_env["MLOPS_IMAGE_NAME"]
        digest = registry.tag_digest(
            stack.registry_address, name, "clothes-1", credentials, stack.registry_dir / CA_CERT
        )
        reference = f"{stack.registry_address}/{name}@{digest}"
        assert result["promoted"]
        assert result["image"] == reference
        (production,) = production_containers(docker_engine, release_env["MLOPS_DEPLOY_NAME"])
        assert production.attrs["Config"]["Image"] == reference
        client = MlflowClient()
        version = client.get_model_version_by_alias("clothes", CHAMPION)
        assert version.tags["image"] == reference
        rendered = Path(client.download_artifacts(version.run_id, result["kubernetes_manifests"])).read_text()
        assert next(yaml.safe_load_all(rendered))["spec"]["template"]["spec"]["containers"][0]["image"] == reference
        assert served_version(release_env["MLOPS_DEPLOY_PORT"]) == 1
        with get_client(sync_client=True) as prefect:  # the release subflow's recorded parameters hide it
            recorded = json.dumps([run.parameters for run in prefect.read_flow_runs()], default=str)
        assert "MLOPS_REGISTRY" not in recorded
        assert credentials.registry_password not in recorded

        # Production was given the store: a label is claimed there.
        base = f"http://127.0.0.1:{release_env['MLOPS_DEPLOY_PORT']}/models/clothes/v1"
        answer = requests.post(base, json={"image": [[3] * 28] * 28}, timeout=10).json()["predictions"][0]
        labelled = requests.post(f"{base}/feedback", json={"id": answer["id"], "class_id": 3}, timeout=10)
        assert labelled.status_code == 202
        claims = store.client("production")
        assert list(claims.keys(claims.key("labels"))) == [f"production/labels/{answer['id'][:2]}/{answer['id']}"]
        run = client.get_run(version.run_id)
        artifacts = Path(client.download_artifacts(version.run_id, "", str(tmp_path / "artifacts")))
        written = json.dumps([run.data.params, run.data.tags, version.tags, recorded]).encode()
        written += b"".join(path.read_bytes() for path in artifacts.rglob("*") if path.is_file())
        for secret in (store.credentials.store_secret_key, store.credentials.store_access_key):
            assert secret.encode() not in written
