"""Stage 2, training: LeNet-5 (and its variants) fitted with per-epoch metrics in MLflow, and the
trials of the hyperparameter search; the model handed on is calibrated (temperature scaling)."""

from tasks.training.calibration import Calibration, calibrate_task
from tasks.training.train import TrainResult, train_task
from tasks.training.tuning import sample_trials, trial_task

__all__ = [
    "Calibration",
    "TrainResult",
    "calibrate_task",
    "sample_trials",
    "train_task",
    "trial_task",
]
