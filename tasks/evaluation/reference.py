"""What the model's held-out predictions look like, stored on the training run: the baseline the drift
monitor (`tasks.monitoring`) compares served traffic with. Made here, beside the evaluation that
produces the predictions, so monitoring reads it and nothing in training or evaluation looks ahead."""

from __future__ import annotations

import numpy as np
from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE

from serving.log.prediction_log import input_summary
from serving.log.records import INPUT_STATS
from serving.preprocessing import to_model_input
from tasks.data.dataset import Dataset

REFERENCE_ARTIFACT = "monitoring/reference.json"
REFERENCE_SAMPLE = 5000


def build_reference(probabilities: np.ndarray, pixels: np.ndarray, class_names: list[str], seed: int = 0) -> dict:
    """What the model's held-out predictions look like: the baseline served traffic is compared with."""
    summary = input_summary(to_model_input(pixels))
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(pixels), size=min(REFERENCE_SAMPLE, len(pixels)), replace=False)
    return {
        "n": len(pixels),
        "class_names": list(class_names),
        "class_distribution": (np.bincount(predicted, minlength=len(class_names)) / len(predicted)).tolist(),
        "confidence": confidence[sample].round(6).tolist(),
        **{key: summary[key][sample].round(6).tolist() for key in INPUT_STATS},
    }


@task(name="save-monitoring-reference", cache_policy=NO_CACHE)
def reference_task(probabilities: np.ndarray, dataset: Dataset, run_id: str) -> None:
    """The held-out split as the model sees it, stored on the run: what `monitor-drift` compares with."""
    reference = build_reference(probabilities, dataset.x_test, list(dataset.class_names))
    MlflowClient().log_dict(run_id, reference, REFERENCE_ARTIFACT)
