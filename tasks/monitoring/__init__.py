"""Stage 6, monitoring: read a window of served traffic (every node's minute summaries), judge it against
the champion's reference, record the verdict and start a retrain when there is something new to learn from."""

from tasks.monitoring.drift import DriftReport
from tasks.monitoring.monitor import (
    champion_task,
    detect_drift_task,
    read_labelled_task,
    read_window_task,
    record_check_task,
    retrain_task,
    verdict,
    window_until,
)

__all__ = [
    "DriftReport",
    "champion_task",
    "detect_drift_task",
    "read_labelled_task",
    "read_window_task",
    "record_check_task",
    "retrain_task",
    "verdict",
    "window_until",
]
