"""`release`: the subflow that takes a registered version to production. Export -> build -> smoke test
(QA container) -> push to the team's registry (when there is one; from then on the image is named by
digest) -> with `release.strategy=shadow`, the candidate beside production on a sample of its live
traffic until the analysis decides -> deploy -> promote -> Kubernetes manifests of the promoted image.
Any failure before promotion, and a shadow analysis that does not promote, leave `champion` and
production as they were."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import flow, get_run_logger

from tasks.evaluation import ChampionScore
from tasks.params import ContainerParams, ModelRef, ReleaseParams
from tasks.registry import champion_version_task
from tasks.release import (
    KUBERNETES_ARTIFACT,
    ParityCheck,
    build_image_task,
    decide,
    deploy_task,
    docker_client,
    export_task,
    kubernetes_manifests_task,
    production_image_task,
    promote_task,
    push_image_task,
    record_shadow_task,
    shadow_task,
    smoke_test_task,
)
from tasks.settings import Settings


@dataclass(frozen=True)
class Release:
    """What the release did; `stage` says whether it ran, was disabled or was skipped (and why)."""

    stage: str
    export_dir: Path
    image: str | None = None
    image_size_mb: float | None = None
    smoke: dict[str, float] | None = None
    promoted: bool = False
    production: str | None = None
    deploy_target: str | None = None
    kubernetes_manifests: str | None = None
    shadow: dict | None = None  # the shadow analysis, when the release went through one

    def as_dict(self) -> dict:
        fields = {k: v for k, v in asdict(self).items() if k != "stage"}
        return {"container_stage": self.stage, **fields, "export_dir": str(self.export_dir)}


@flow(name="release", validate_parameters=False)  # numpy arrays and the settings object pass as they are
def release_flow(
    ref: ModelRef,
    run_id: str,
    parity: ParityCheck,
    params: ContainerParams,
    strategy: ReleaseParams,
    champion: ChampionScore | None,
    settings: Settings,
) -> Release:
    logger = get_run_logger()
    export_dir = export_task(ref, settings.release.model_root)
    if params.enabled is False:
        return Release("disabled (container.enabled=false)", export_dir)
    if params.enabled is None and docker_client() is None:
        skipped = "skipped: no Docker engine answers (`make docker-up` starts one)"
        logger.warning("container stage %s; %s stays challenger", skipped, ref)
        return Release(skipped, export_dir)
    image = build_image_task(ref, export_dir, run_id, settings, params.serving)
    report = smoke_test_task(image, ref, parity, params, settings)
    # What was smoke-tested is exactly what runs: by digest from the registry, else by tag on this engine.
    runs_as = push_image_task(image, ref, settings) if settings.release.registry else image.tag
    previous = champion_version_task(ref.name)
    serving_before = production_image_task(settings)  # every model's champion, as production serves them now
    shadow = None
    if strategy.strategy == "shadow" and params.deploy and previous is not None:
        offline = champion.disagreement(parity.expected) if champion else None
        verdict = shadow_task(runs_as, ref, run_id, strategy, offline, settings)
        record_shadow_task(ref, run_id, verdict)
        decision = decide(ref, verdict, strategy)  # a person's, when release.approval asks for one: the run pauses
        shadow = {**verdict.as_dict(), "decision": decision.as_dict()}
        if not decision.promote:
            logger.warning("%s not promoted (%s); production unchanged", ref, decision.said)
            stage = f"not promoted: {decision.said}"
            return Release(stage, export_dir, runs_as, image.size_mb, asdict(report), shadow=shadow)
    elif strategy.strategy == "shadow" and params.deploy:
        logger.info("no champion of '%s' yet: the first release goes direct", ref.name)
    container = deploy_task(runs_as, ref, settings) if params.deploy else None
    try:
        promote_task(ref, run_id, image, runs_as, report, settings)
    except Exception:
        if container and serving_before is not None:  # production back to what it served
            logger.error("promotion failed: redeploying what production served before (%s)", serving_before)
            deploy_task(serving_before, ModelRef(ref.name, int(previous.version)) if previous else ref, settings)
        raise
    kubernetes_manifests_task(runs_as, ref, run_id, settings)
    return Release(
        "ran",
        export_dir,
        runs_as,
        image.size_mb,
        asdict(report),
        promoted=True,
        production=container and f"http://{settings.deploy.host}:{settings.deploy.port}",
        deploy_target=container and settings.deploy.target,
        kubernetes_manifests=KUBERNETES_ARTIFACT,
        shadow=shadow,
    )
