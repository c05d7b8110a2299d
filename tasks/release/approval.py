"""A person's decision on a shadow release, when the analysis is not enough (`release.approval`): the
release flow pauses with a typed form in the Prefect UI showing the analysis; the answer, who gave it and
why go to the model version. A paused run needs a Prefect server that outlives it: without one (a
temporary server, as `make run` starts) the release says so and ends without moving production."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.settings import PREFECT_API_URL
from pydantic import Field

from tasks.events import APPROVAL_WANTED, RELEASE_DECIDED, emit
from tasks.params import ModelRef, ReleaseParams
from tasks.release.shadow_analysis import Verdict


class Approval(RunInput):
    """The form a reviewer fills in to resume the paused release."""

    decision: Literal["promote", "abort"] = Field(description="promote: the candidate replaces production")
    reviewer: str = Field(min_length=1, description="who decides (recorded on the model version)")
    comment: str = Field(default="", description="why")


def needs_person(params: ReleaseParams, outcome: str) -> bool:
    return params.approval == "always" or (params.approval == "inconclusive" and outcome == "inconclusive")


def persistent_server() -> bool:
    """A Prefect server runs outside this process (PREFECT_API_URL): someone can resume a paused run."""
    return bool(PREFECT_API_URL.value())


def form_description(ref: ModelRef, verdict: Verdict) -> str:
    rows = "\n".join(f"| {row['check']} | {row['value']} |" for row in verdict.table())
    return (
        f"**Release of {ref}: the shadow analysis says _{verdict.outcome}_.** Promote it to production, "
        f"or abort (production and the champion stay as they are).\n\n| check | value |\n| --- | --- |\n{rows}\n"
    )


def ask_person(ref: ModelRef, verdict: Verdict, params: ReleaseParams) -> Approval:
    """Pause the running flow until a reviewer submits the form (a Prefect server that outlives the run
    must be there to resume it). Raises when nobody answers within `approval_timeout_hours` (the run
    fails, nothing moved)."""
    suggested = verdict.outcome if verdict.outcome in ("promote", "abort") else "abort"
    form = Approval.with_initial_data(description=form_description(ref, verdict), decision=suggested)
    return pause_flow_run(wait_for_input=form, timeout=int(params.approval_timeout_hours * 3600), poll_interval=2)


@task(name="record-approval", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
def record_approval_task(ref: ModelRef, approval: Approval) -> None:
    """The decision, who made it and why, as `approval.*` tags on the model version."""
    client = MlflowClient()
    for key, value in {"decision": approval.decision, "by": approval.reviewer, "comment": approval.comment}.items():
        client.set_model_version_tag(ref.name, str(ref.version), f"approval.{key}", value[:5000])


@dataclass(frozen=True)
class Decision:
    promote: bool
    said: str  # what decided, in words
    approval: Approval | None = None

    def as_dict(self) -> dict:
        approval = self.approval.model_dump(include={"decision", "reviewer", "comment"}) if self.approval else None
        return {"promote": self.promote, "said": self.said, "approval": approval}


def decide(ref: ModelRef, verdict: Verdict, params: ReleaseParams) -> Decision:
    """The analysis' verdict, or a person's decision where `release.approval` asks for one (the flow run
    pauses until the form is submitted). Called in the release flow, not in a task: only a flow pauses."""
    decision = decision_of(ref, verdict, params)
    if not decision.promote:  # a promotion is announced once production runs it (promote_task)
        emit(
            RELEASE_DECIDED,
            ref.name,
            f"{ref} not promoted: {decision.said}",
            outcome="not promoted",
            version=ref.version,
            said=decision.said,
        )
    return decision


def decision_of(ref: ModelRef, verdict: Verdict, params: ReleaseParams) -> Decision:
    if not needs_person(params, verdict.outcome):
        return Decision(verdict.outcome == "promote", f"shadow analysis {verdict.outcome}")
    if not persistent_server():
        get_run_logger().warning(
            "a person decides this release (release.approval=%s, analysis %s), but no Prefect server outlives "
            "this run to resume it (`make up` starts one)",
            params.approval,
            verdict.outcome,
        )
        return Decision(False, f"shadow analysis {verdict.outcome}; a person's approval needed, and no Prefect server")
    emit(
        APPROVAL_WANTED,
        ref.name,
        f"{ref} waits for a person's decision in the Prefect UI (shadow analysis: "
        f"{verdict.outcome}; {'; '.join(verdict.reasons)})",
        version=ref.version,
    )
    approval = ask_person(ref, verdict, params)
    record_approval_task(ref, approval)
    return Decision(approval.decision == "promote", f"{approval.decision} by {approval.reviewer}", approval)
