"""Kubernetes manifests for a promoted image: Deployment, Service, HorizontalPodAutoscaler and
PodDisruptionBudget, with the same hardening and health routes as the Docker targets. Rendered by the
release stage (an MLflow artifact of the run and a Prefect artifact) for clusters the pipeline does not
drive itself: `kubectl apply -f clothes.yaml`."""

from __future__ import annotations

import yaml
from mlflow import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.params import ModelRef
from tasks.release.capture import CREDENTIALS_FILE, CaptureTarget
from tasks.release.docker_engine import CONTAINER_LOG_DIR, SERVER_UID
from tasks.settings import Settings

ARTIFACT = "kubernetes/clothes.yaml"
PORT = 8080


def _probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures}


def manifests(image: str, ref: ModelRef, settings: Settings, max_replicas: int = 10) -> list[dict]:
    """The objects, as the Kubernetes API takes them (apps/v1, v1, autoscaling/v2, policy/v1)."""
    name = settings.deploy.name
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "inference-server"}
    versioned = {**labels, "app.kubernetes.io/version": str(ref.version), "clothes-mlops/model": ref.name}
    container = {
        "name": "server",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT}],
        "env": [{"name": "MLOPS_SERVE_PREDICTION_LOG_DIR", "value": CONTAINER_LOG_DIR}],
        # Startup covers loading and warming every model; then readiness gates traffic and liveness restarts.
        "startupProbe": _probe("/health/ready", 2, 30),
        "readinessProbe": _probe("/health/ready", 5, 2),
        "livenessProbe": _probe("/health/live", 10, 3),
        "resources": {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": f"{int(settings.deploy.cpus * 1000)}m", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "prediction-log", "mountPath": CONTAINER_LOG_DIR},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": versioned},
        "spec": {
            "replicas": settings.deploy.replicas,
            "selector": {"matchLabels": labels},
            # As on swarm: a new pod must be ready before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": versioned},
                "spec": {
                    "containers": [container],
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                        # Collected by the cluster's log shipper, or swap in a PersistentVolumeClaim.
                        {"name": "prediction-log", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }
    capture = CaptureTarget.configured(settings)
    if capture is not None:
        with_capture(deployment, container, capture, name)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }
    autoscaler = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": settings.deploy.replicas,
            "maxReplicas": max(max_replicas, settings.deploy.replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": {"matchLabels": labels}, "maxUnavailable": 1},
    }
    return [deployment, service, autoscaler, budget]


def with_capture(deployment: dict, container: dict, capture: CaptureTarget, name: str) -> None:
    """Pods ship their traffic to the store (an emptyDir goes with its pod): the URL, endpoint and node
    in the environment, the credentials from a Secret the cluster's operator makes, never its values:
    `kubectl create secret generic <name>-capture-credentials --from-file=credentials=<AWS credentials file>`
    (with a pod role instead, delete the volume and the variable)."""
    container["env"] += [
        *({"name": key, "value": value} for key, value in capture.settings_env().items()),
        {"name": "MLOPS_SERVE_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": f"/var/run/secrets/clothes/{CREDENTIALS_FILE}"},
    ]
    container["volumeMounts"].append({"name": "capture-credentials", "mountPath": "/var/run/secrets/clothes"})
    deployment["spec"]["template"]["spec"]["volumes"].append(
        {
            "name": "capture-credentials",
            "secret": {
                "secretName": f"{name}-capture-credentials",
                "items": [{"key": "credentials", "path": CREDENTIALS_FILE}],
                "defaultMode": 0o400,
            },
        }
    )


def manifests_yaml(objects: list[dict]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


@task(name="kubernetes-manifests", task_run_name="kubernetes-manifests-v{ref.version}", cache_policy=NO_CACHE)
def kubernetes_manifests_task(image: str, ref: ModelRef, run_id: str, settings: Settings) -> str:
    """The manifests of the promoted image, on the run (`kubernetes/clothes.yaml`) and in Prefect."""
    text = manifests_yaml(manifests(image, ref, settings))
    MlflowClient().log_text(run_id, text, ARTIFACT)
    create_markdown_artifact(
        key="kubernetes-manifests",
        description=f"Kubernetes manifests for {ref}",
        markdown=f"## Kubernetes manifests for {ref} (`{image}`)\n\n`kubectl apply -f clothes.yaml`\n\n"
        f"```yaml\n{text}```\n",
    )
    return text
