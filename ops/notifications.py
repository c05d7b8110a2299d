"""Notifications: `make up` points one Prefect automation per lifecycle event (`tasks.events.NOTIFIED`:
release decided, release waiting for a person, drift, gate failure) at the team's webhook
(`MLOPS_NOTIFY_WEBHOOK`), through a Prefect Webhook block. Each posts `{"text": <the event's line>}`, the
form Slack's incoming webhooks take (Mattermost's and Rocket.Chat's too). Prefect's own automations
deliver them, so a notification needs no process of ours. Run with the stack's environment:
`python -m ops.notifications` (idempotent: it replaces what it made before)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import get_client
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.types import SecretDict
from pydantic import SecretStr

from tasks.events import NOTIFIED
from tasks.settings import Settings

BLOCK = "clothes-notify"
PAYLOAD = '{"text": {{ event.payload.text | tojson }}}'


def automation_name(event: str) -> str:
    return f"clothes: {event} -> webhook"


def configure(webhook_url: str) -> list[str]:
    """The webhook block and the automations; returns the automations' names."""
    webhook = Webhook(
        method="POST", url=SecretStr(webhook_url), headers=SecretDict({"Content-Type": "application/json"})
    )
    block_id: UUID = webhook.save(BLOCK, overwrite=True)  # type: ignore[assignment]  # sync here, not the coroutine
    names = []
    with get_client(sync_client=True) as client:
        for event in NOTIFIED:
            name = automation_name(event)
            for existing in client.read_automations_by_name(name):
                client.delete_automation(existing.id)
            trigger = EventTrigger(expect={event}, posture=Posture.Reactive, threshold=1, within=timedelta(0))
            automation = AutomationCore(
                name=name,
                description=f"POST {event} events to MLOPS_NOTIFY_WEBHOOK as Slack-compatible JSON",
                trigger=trigger,
                actions=[CallWebhook(block_document_id=block_id, payload=PAYLOAD)],
            )
            client.create_automation(automation)
            names.append(name)
    return names


def main() -> None:
    webhook = Settings().monitor.notify_webhook
    if webhook is None:
        print("notifications: off (set MLOPS_NOTIFY_WEBHOOK to a Slack-compatible webhook URL)", flush=True)
        return
    names = configure(webhook.get_secret_value())
    print(f"notifications: {len(names)} automations post to MLOPS_NOTIFY_WEBHOOK", flush=True)


if __name__ == "__main__":
    main()
