"""The Kubernetes manifests the release stage renders: valid against the API schemas (offline, strict),
and consistent with the image and the server's routes."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from serving import create_app
from tasks.params import ModelRef
from tasks.release.kubernetes import manifests, manifests_yaml
from tasks.settings import Settings

IMAGE = "registry.example.com/clothes-serving:7"


@pytest.fixture
def objects(monkeypatch) -> list[dict]:
    monkeypatch.setenv("MLOPS_DEPLOY_REPLICAS", "3")
    return list(yaml.safe_load_all(manifests_yaml(manifests(IMAGE, ModelRef("clothes", 7), Settings()))))


@pytest.mark.parametrize("version", ["1.30.0", "1.37.0"])
def test_every_object_is_valid_for_the_kubernetes_api(objects, version):
    assert [obj["kind"] for obj in objects] == [
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_mistake_is_caught_by_the_validation(objects):
    objects[0]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(objects[0], "1.37.0", strict=True)


def test_probes_selectors_and_hardening_match_the_image(objects, model_root):
    deployment, service, autoscaler, budget = objects
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == IMAGE
    assert deployment["spec"]["replicas"] == 3
    routes = {rule.rule for rule in create_app(model_root).url_map.iter_rules()}
    probes = [container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")]
    assert set(probes) <= routes
    assert probes[1] == "/health/ready"
    assert container["ports"][0]["containerPort"] == 8080
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector == budget["spec"]["selector"]["matchLabels"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert autoscaler["spec"]["minReplicas"] == 3
    security = container["securityContext"]
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security["allowPrivilegeEscalation"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/log/clothes"}
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_with_capture_the_pods_ship_to_the_store_and_the_manifests_hold_no_credentials(monkeypatch):
    for key, value in {
        "MLOPS_CAPTURE_URL": "s3://clothes/capture",
        "AWS_ENDPOINT_URL_S3": "http://10.0.0.5:8333",
        "AWS_ACCESS_KEY_ID": "AKIDTESTTESTTESTTEST",
        "AWS_SECRET_ACCESS_KEY": "the store's secret",
    }.items():
        monkeypatch.setenv(key, value)
    text = manifests_yaml(manifests(IMAGE, ModelRef("clothes", 7), Settings()))
    assert "the store's secret" not in text and "AKIDTESTTESTTESTTEST" not in text
    deployment = next(yaml.safe_load_all(text))
    kubernetes_validate.validate(deployment, "1.37.0", strict=True)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}
    assert env["MLOPS_SERVE_CAPTURE_URL"] == "s3://clothes/capture"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://10.0.0.5:8333"
    assert env["MLOPS_SERVE_NODE"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["capture-credentials"]["secret"]["secretName"] == "clothes-serving-capture-credentials"
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"].rsplit("/", 1)[0] in mounted
