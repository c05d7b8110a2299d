"""A shadow release: the candidate's image runs beside production on a private loopback port, answering
no user; production mirrors a sample of its classifications to it (configured by `shadow.json` in the
deployment's own prediction-log directory, which no API client can reach); the analysis
(`shadow_analysis`) reads the paired records at an interval until it promotes, aborts or runs out of
time. Whatever happens, the shadow and its configuration are removed and production is untouched."""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from serving.log.object_store import StoreError
from serving.log.reader import GrowingWindow
from serving.log.records import Record
from serving.mirror import CONFIG_FILE
from tasks.evaluation.estimate import load_estimator
from tasks.network import free_port
from tasks.params import ModelRef, ReleaseParams
from tasks.release.capture import capture_store
from tasks.release.docker_engine import HARDENING, LABEL, docker_name, require_docker, wait_container_ready
from tasks.release.shadow_analysis import (
    Estimators,
    ShadowEvidence,
    Verdict,
    allowed_disagreement,
    judge,
    shadow_evidence,
)
from tasks.settings import Settings
from tasks.tracking import champion_version

Log = Callable[[str], None]
MIRROR_METRIC = "clothes_shadow_mirrored_total"
PAIRED = frozenset({"shadow", "feedback"})  # what the analysis reads of the log


@dataclass(frozen=True)
class ShadowDeployment:
    container: object  # docker's Container
    url: str
    config_path: Path
    started: float  # time.time() when mirroring was switched on


def production_mirrors(production_url: str) -> bool:
    """Whether production's image can mirror: images from before shadow releases have no mirror metrics."""
    try:
        with urllib.request.urlopen(f"{production_url}/metrics", timeout=5) as response:
            return MIRROR_METRIC.encode() in response.read()
    except (OSError, ValueError):
        return False


def start_shadow(client, image: str, ref: ModelRef, params: ReleaseParams, settings: Settings, log: Log):
    """The candidate's container on a free loopback port (no prediction log: production logs the pairs),
    then the configuration that makes production mirror to it."""
    port = free_port()
    container = client.containers.run(
        image,
        detach=True,
        name=f"{settings.deploy.name}-shadow-{docker_name(ref.name)}-v{ref.version}-{int(time.time())}",
        network_mode="host",
        environment={"MLOPS_SERVE_HOST": "127.0.0.1", "MLOPS_SERVE_PORT": str(port)},
        labels={
            f"{LABEL}.role": "shadow",
            f"{LABEL}.deployment": settings.deploy.name,
            f"{LABEL}.model": ref.name,
            f"{LABEL}.version": str(ref.version),
        },
        **HARDENING,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        seconds = wait_container_ready(container, url, settings.release.ready_timeout)
    except Exception:
        container.remove(force=True)
        raise
    config = {
        "url": url,
        "model": ref.name,
        "version": ref.version,
        "sample": params.sample,
        "timeout": params.mirror_timeout_seconds,
    }
    path = settings.monitor.prediction_log_dir.resolve() / CONFIG_FILE
    written = path.with_suffix(".tmp")
    written.write_bytes(orjson.dumps(config))
    os.chmod(written, 0o644)  # the image's user reads it
    written.replace(path)  # whole or not at all: a worker never reads half a file
    log(f"shadow {container.name} ready in {seconds:.2f} s on {url}; production mirrors {params.sample:.0%} to it")
    return ShadowDeployment(container, url, path, time.time())


def stop_shadow(shadow: ShadowDeployment, log: Log) -> None:
    """Mirroring off first (workers re-read within seconds; a request to a gone shadow is only a record),
    then the container."""
    with contextlib.suppress(FileNotFoundError):
        shadow.config_path.unlink()
    with contextlib.suppress(Exception):
        shadow.container.remove(force=True)  # type: ignore[attr-defined]
    log(f"shadow {shadow.container.name} removed; mirroring off")  # type: ignore[attr-defined]


def refused(reason: str, params: ReleaseParams, offline: float | None) -> Verdict:
    """No analysis could run: inconclusive, production left as it is."""
    return Verdict("inconclusive", [reason], ShadowEvidence(), allowed_disagreement(params, offline), offline)


def estimators_of(ref: ModelRef, run_id: str) -> Estimators:
    """The champion's and the candidate's accuracy-estimator statistics, each from its own run."""
    champion = champion_version(ref.name)
    return Estimators(load_estimator(champion.run_id) if champion else None, load_estimator(run_id))


def watch(
    ref: ModelRef,
    params: ReleaseParams,
    offline: float | None,
    traffic: GrowingWindow,
    log: Log,
    estimators: Estimators,
) -> Verdict:
    """Analyse every `interval_seconds` until the verdict is no longer `wait`, or the deadline. A store
    that does not answer postpones an analysis (the last records read are judged at the deadline): it
    never fails the release, and production is never touched."""
    deadline = time.monotonic() + params.deadline_minutes * 60
    records: list[Record] = []
    while True:
        time.sleep(max(0.0, min(params.interval_seconds, deadline - time.monotonic())))
        final = time.monotonic() >= deadline
        try:
            records = traffic.read()
        except StoreError as exc:
            then = "judging what was read" if final else "trying again at the next interval"
            log(f"shadow analysis: the capture store did not answer ({exc}); {then}")
            if not final:
                continue
        evidence = shadow_evidence(records, ref.version, estimators)
        verdict = judge(evidence, params, offline, final=final)
        log(
            f"shadow analysis: {evidence.requests} requests, {evidence.compared} images compared, "
            f"disagreement {evidence.disagreement:.2%}, errors {evidence.errors}: {verdict.outcome}"
        )
        if verdict.outcome != "wait":
            return verdict


@task(name="shadow-analysis", task_run_name="shadow-v{ref.version}", cache_policy=NO_CACHE)
def shadow_task(
    image: str, ref: ModelRef, run_id: str, params: ReleaseParams, offline: float | None, settings: Settings
) -> Verdict:
    """The candidate judged on production's live traffic; production itself is never touched."""
    logger = get_run_logger()
    production = f"http://{settings.deploy.host}:{settings.deploy.port}"
    if settings.deploy.target != "docker":
        verdict = refused("shadow releases run on the docker target (MLOPS_DEPLOY_TARGET=docker)", params, offline)
    elif not production_mirrors(production):
        reason = (
            f"production at {production} does not mirror (its image predates shadow releases, or it does not "
            "answer): release this version with release.strategy=direct"
        )
        verdict = refused(reason, params, offline)
    else:
        shadow = start_shadow(require_docker(), image, ref, params, settings, logger.info)
        try:
            # production's log here, and every file capture shipped (and removed here) from the store
            log_dir, store = settings.monitor.prediction_log_dir, capture_store(settings)
            traffic = GrowingWindow(log_dir, store, shadow.started, PAIRED)
            verdict = watch(ref, params, offline, traffic, logger.info, estimators_of(ref, run_id))
        finally:
            stop_shadow(shadow, logger.info)
    create_table_artifact(verdict.table(), key="shadow-analysis", description=f"{ref} in shadow: {verdict.outcome}")
    logger.info("shadow analysis of %s: %s (%s)", ref, verdict.outcome, "; ".join(verdict.reasons))
    return verdict


@task(name="record-shadow-analysis", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def record_shadow_task(ref: ModelRef, run_id: str, verdict: Verdict) -> None:
    """`shadow.*` metrics on the candidate's run; the decision and its reasons on the model version."""
    client = MlflowClient()
    for key, value in verdict.evidence.metrics().items():
        client.log_metric(run_id, key, value)
    client.log_dict(run_id, verdict.as_dict(), "release/shadow_analysis.json")
    client.set_model_version_tag(ref.name, str(ref.version), "shadow.decision", verdict.outcome)
    client.set_model_version_tag(ref.name, str(ref.version), "shadow.reasons", "; ".join(verdict.reasons)[:5000])
