"""A person's decision on a shadow release, through Prefect as its UI does it: the release flow pauses
with the approval form, a reviewer resumes it with their input through Prefect's API, and the decision,
the reviewer and the comment land on the MLflow model version."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run

from tasks.params import ModelRef, ReleaseParams
from tasks.release import approval
from tasks.release.shadow_analysis import ShadowEvidence, Verdict
from tasks.settings import Settings
from tasks.tracking import configure_mlflow

pytestmark = pytest.mark.slow
REF = ModelRef("clothes", 2)


def verdict(outcome: str) -> Verdict:
    evidence = ShadowEvidence(requests=40, images=40, compared=40, disagreements=2)
    return Verdict(outcome, ["40 of 300 images compared"], evidence, 0.1, 0.05)  # type: ignore[arg-type]


@flow
def release_like(outcome: str, params: ReleaseParams) -> approval.Decision:
    return approval.decide(REF, verdict(outcome), params)


def resume_when_paused(answer: dict, seen: dict) -> None:
    """A reviewer: waits for the paused run, reads its form, answers it."""
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=paused)
            if runs:
                seen["run"] = runs[0]
                resume_flow_run(runs[0].id, run_input=answer)
                return
            time.sleep(0.5)


@pytest.fixture
def registered(prefect_harness, mlflow_store):
    configure_mlflow(Settings())
    client = MlflowClient()
    client.create_registered_model("clothes")
    for _ in range(2):
        client.create_model_version("clothes", source="file:///nowhere")
    return client


def test_an_inconclusive_release_waits_for_a_reviewer_who_promotes_it(registered):
    answer = {"decision": "promote", "reviewer": "ana", "comment": "the photos look right"}
    seen: dict = {}
    reviewer = threading.Thread(target=contextvars.copy_context().run, args=(resume_when_paused, answer, seen))
    reviewer.start()
    decision = release_like("inconclusive", ReleaseParams(strategy="shadow", approval="inconclusive"))
    reviewer.join()
    assert seen["run"].state.type == StateType.PAUSED
    assert decision.promote
    assert decision.said == "promote by ana"
    tags = registered.get_model_version("clothes", "2").tags
    assert tags["approval.decision"] == "promote"
    assert tags["approval.by"] == "ana"
    assert tags["approval.comment"] == "the photos look right"


def test_always_asks_even_when_the_analysis_promotes_and_the_reviewer_may_abort(registered):
    answer = {"decision": "abort", "reviewer": "bo", "comment": "not on a Friday"}
    reviewer = threading.Thread(target=contextvars.copy_context().run, args=(resume_when_paused, answer, {}))
    reviewer.start()
    decision = release_like("promote", ReleaseParams(strategy="shadow", approval="always"))
    reviewer.join()
    assert not decision.promote
    assert registered.get_model_version("clothes", "2").tags["approval.decision"] == "abort"


def test_without_a_server_to_resume_on_a_release_that_needs_a_person_is_not_promoted(registered, monkeypatch):
    monkeypatch.setattr(approval, "persistent_server", lambda: False)
    decision = release_like("inconclusive", ReleaseParams(strategy="shadow"))
    assert not decision.promote
    assert "no Prefect server" in decision.said
    assert "approval.decision" not in registered.get_model_version("clothes", "2").tags


def test_never_takes_the_analysis_verdict_without_pausing(registered):
    params = ReleaseParams(strategy="shadow", approval="never")
    assert release_like("promote", params).promote
    assert not release_like("inconclusive", params).promote
