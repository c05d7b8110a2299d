"""Stage 4, the registry: a candidate that passed the gates becomes a version with alias
`challenger`, its model card and tags; `champion` moves only when the release proved its image.
The MLflow bookkeeping every stage shares (runs, the champion's lookup) is the ground floor's
`tasks.tracking`."""

from tasks.registry.policy import (
    champion_version_task,
    model_card,
    promote_version,
    register_task,
    unchanged_champion_task,
)

__all__ = [
    "champion_version_task",
    "model_card",
    "promote_version",
    "register_task",
    "unchanged_champion_task",
]
