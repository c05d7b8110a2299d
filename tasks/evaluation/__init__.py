"""Stage 3, evaluation: test-split metrics, the engineered hold-out (photo-style and robustness
slices), the out-of-distribution flag (fitted, calibrated and judged on non-clothing inputs), the
champion scored on the same images, the drift monitor's reference, the statistics of the label-free
accuracy estimate, and the quality gates a candidate must pass."""

from tasks.evaluation.champion import champion_score_task
from tasks.evaluation.estimate import EstimatorStats, estimator_task
from tasks.evaluation.gates import TEST, ChampionScore, Evidence, gates_task
from tasks.evaluation.holdout import accuracy_of, evaluate_slices_task, holdout_task
from tasks.evaluation.metrics import Evaluation, evaluate_task, predict_task
from tasks.evaluation.ood import OodReport, ood_task
from tasks.evaluation.reference import reference_task

__all__ = [
    "TEST",
    "ChampionScore",
    "EstimatorStats",
    "Evaluation",
    "Evidence",
    "OodReport",
    "accuracy_of",
    "champion_score_task",
    "estimator_task",
    "evaluate_slices_task",
    "evaluate_task",
    "gates_task",
    "holdout_task",
    "ood_task",
    "predict_task",
    "reference_task",
]
