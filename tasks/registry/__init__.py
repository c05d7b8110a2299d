"""Stage 3, the system of record: MLflow runs (who owns them, where artifacts go), the registry
policy (challenger, champion) and the champion's scores the gates compare with."""

from tasks.registry.policy import (
    champion_score_task,
    champion_version,
    champion_version_task,
    model_card,
    promote_version,
    register_task,
    unchanged_champion_task,
)
from tasks.registry.tracking import configure_mlflow, git_commit, log_dataset_task, prepare_tracking_task, tracked_run

__all__ = [
    "champion_score_task",
    "champion_version",
    "champion_version_task",
    "configure_mlflow",
    "git_commit",
    "log_dataset_task",
    "model_card",
    "prepare_tracking_task",
    "promote_version",
    "register_task",
    "tracked_run",
    "unchanged_champion_task",
]
