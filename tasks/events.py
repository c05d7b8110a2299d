"""The Prefect events the lifecycle emits, by name: what a person or an automation acts on. `make up`
points one automation per event at the team's webhook (`ops/notifications.py`); every event carries a
one-line `text` so a Slack-compatible receiver shows it as it is."""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

RELEASE_DECIDED = "clothes.release.decided"  # outcome: promoted, aborted, not promoted (and why)
APPROVAL_WANTED = "clothes.release.approval-wanted"  # a release waits for a person in the Prefect UI
DRIFT_DETECTED = "clothes.drift.detected"
GATES_FAILED = "clothes.gates.failed"
NOTIFIED = (RELEASE_DECIDED, APPROVAL_WANTED, DRIFT_DETECTED, GATES_FAILED)


def emit(event: str, model: str, text: str, **payload: Any) -> None:
    """`event` about `model`, with `text` (one line for people) and the details in its payload."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"clothes.model.{model}", "prefect.resource.name": model},
        payload={"text": text, **payload},
    )
