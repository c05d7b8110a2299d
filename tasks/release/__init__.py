"""Stage 5, release: export the registered version, build the serving image, smoke-test it as a QA
deployment, push it to the team's registry, deploy it on a target (`targets/`), promote it, render
Kubernetes manifests; and roll a model back to its previous champion."""

from tasks.release.approval import decide
from tasks.release.capture import capture_store
from tasks.release.deploy import deploy_task, released_image, tag_champion
from tasks.release.docker_engine import ContainerStageError, docker_client, require_docker
from tasks.release.export import export_task
from tasks.release.kubernetes import ARTIFACT as KUBERNETES_ARTIFACT
from tasks.release.kubernetes import kubernetes_manifests_task
from tasks.release.promote import promote_task
from tasks.release.registry import ensure_local, push_image_task
from tasks.release.rollback import restore_champion_task, rollback_target_task
from tasks.release.served_models import build_image_task, image_tag, production_image_task, with_other_models_task
from tasks.release.shadow import record_shadow_task, shadow_task
from tasks.release.smoke import ParityCheck, smoke_test_task

__all__ = [
    "KUBERNETES_ARTIFACT",
    "ContainerStageError",
    "ParityCheck",
    "build_image_task",
    "capture_store",
    "decide",
    "deploy_task",
    "docker_client",
    "ensure_local",
    "export_task",
    "image_tag",
    "kubernetes_manifests_task",
    "production_image_task",
    "promote_task",
    "push_image_task",
    "record_shadow_task",
    "released_image",
    "require_docker",
    "restore_champion_task",
    "rollback_target_task",
    "shadow_task",
    "smoke_test_task",
    "tag_champion",
    "with_other_models_task",
]
