"""The engineered hold-out as a pipeline stage: build the slices (`tasks.evaluation.slices`) from this run's test
split, score a model on each, and record it in MLflow (`slice.<name>.accuracy`, and per-class recall
per slice as a table) for the gates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.data.dataset import Dataset
from tasks.evaluation.gates import TEST
from tasks.evaluation.metrics import Evaluation, compute_metrics, predict_probabilities
from tasks.evaluation.slices import Slices, build_slices


def evaluate_slices(
    model, slices: Slices, class_names: Sequence[str]
) -> tuple[dict[str, Evaluation], dict[str, np.ndarray]]:
    """Per slice: the metrics, and which images the model got right (what the paired gates compare)."""
    evaluations, correct = {}, {}
    for name, (pixels, labels) in slices.items():
        predicted = predict_probabilities(model, pixels).argmax(axis=1)
        evaluations[name], correct[name] = compute_metrics(labels, predicted, class_names), predicted == labels
    return evaluations, correct


def correct_answers(
    model, dataset: Dataset, slices: Slices, predicted: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Which images of the test split (`TEST`) and of each slice `model` gets right: a champion's side of
    the paired gates. `predicted`: its test-split classes, when the caller has them already."""
    if predicted is None:
        predicted = predict_probabilities(model, dataset.x_test).argmax(axis=1)
    return {TEST: predicted == dataset.y_test, **evaluate_slices(model, slices, dataset.class_names)[1]}


def accuracy_of(correct: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(hits.mean()) for name, hits in correct.items()}


def recall_table(evaluations: dict[str, Evaluation]) -> dict[str, list]:
    """Columns for `mlflow.log_table`: one row per slice and class."""
    rows = [
        (name, cls, values["recall"], int(values["support"]))
        for name, evaluation in evaluations.items()
        for cls, values in evaluation.per_class.items()
    ]
    return {column: [row[i] for row in rows] for i, column in enumerate(("slice", "class", "recall", "support"))}


@task(name="engineered-holdout", cache_policy=NO_CACHE)
def holdout_task(dataset: Dataset, size: int, seed: int) -> Slices:
    """Made from this run's test split, so candidate and champion are judged on the same images."""
    slices = build_slices(dataset.x_test, dataset.y_test, size, seed)
    get_run_logger().info(
        "engineered hold-out: %d slices of %d images", len(slices), len(next(iter(slices.values()))[1])
    )
    return slices


@task(name="evaluate-slices", cache_policy=NO_CACHE)
def evaluate_slices_task(
    model, dataset: Dataset, slices: Slices, probabilities: np.ndarray, run_id: str
) -> dict[str, np.ndarray]:
    """Which images of the test split (its `probabilities`, computed once) and of each slice the
    candidate got right, as `correct_answers` scores a champion; the slices' accuracies go to MLflow."""
    evaluations, correct = evaluate_slices(model, slices, dataset.class_names)
    accuracies = accuracy_of(correct)
    client = MlflowClient()
    for name, accuracy in accuracies.items():
        client.log_metric(run_id, f"slice.{name}.accuracy", accuracy)
    client.log_table(run_id, recall_table(evaluations), "evaluation/slice_recall.json")
    get_run_logger().info("slice accuracy: %s", ", ".join(f"{k} {v:.4f}" for k, v in accuracies.items()))
    return {TEST: probabilities.argmax(axis=1) == dataset.y_test, **correct}
