"""Accuracy without labels: how many of a window's answers are right, estimated from the answers alone.

Every estimator reads what the server logs of each prediction (its calibrated confidence, its class
and, where logged, every class's probability) and statistics fitted on the training run's validation
split, stored on the run (`ESTIMATOR_ARTIFACT`) like the out-of-distribution flag's:
- `average_confidence`: the mean confidence; right on average when the probabilities are calibrated
  (`tasks.training.calibration`) and the shift keeps them so.
- `cbpe`: the expected confusion matrix (NannyML's confidence-based performance estimation): row i,
  column j sums the probability of class i over the answers j. Its trace is the average confidence;
  what it adds is each class's expected recall.
- `atc`: Average Thresholded Confidence (Garg et al., ICLR 2022): the share of answers more confident
  than the threshold that leaves as many validation answers above it as were right.
Each estimate comes with a 95% Wilson interval for the window's size; what each one misses under which
shift is measured by `make bench-estimate` (docs/estimate.md), which chose `DEFAULT`. All of them read
confidence, so none sees a model that is confidently wrong: strong rotations or shifts, inputs that
are not clothing (the flag's share is its own drift signal), concept shift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from serving.log.records import Prediction
from serving.log.summary import TrafficSummary, expected_confusion
from tasks.data.dataset import Dataset, stratified_split
from tasks.evaluation.metrics import predict_probabilities, wilson
from tasks.params import TrainParams

ESTIMATOR_ARTIFACT = "estimate/estimator.json"
ESTIMATORS = ("average_confidence", "cbpe", "atc")
DEFAULT = "atc"  # the smallest mean and worst error on `make bench-estimate` (docs/estimate.md)


@dataclass(frozen=True)
class Answers:
    """What the server says of each of N inputs: its class, its confidence and every class's
    probability (None: not logged, as by servers before 0.4.0 and in mirrored requests' records)."""

    predicted: np.ndarray  # (N,) int
    confidence: np.ndarray  # (N,)
    probabilities: np.ndarray | None = None  # (N, classes)

    @classmethod
    def of(cls, probabilities: np.ndarray) -> Answers:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        predicted = probabilities.argmax(axis=1)
        return cls(predicted, probabilities[np.arange(len(predicted)), predicted], probabilities)

    @classmethod
    def logged(cls, predictions: Sequence[Prediction]) -> Answers:
        """From the prediction log's records; the probabilities only when every record has them."""
        probabilities = None
        if predictions and all("probabilities" in p for p in predictions):
            probabilities = np.asarray([p["probabilities"] for p in predictions], dtype=np.float64)
        return cls(
            np.asarray([p["class_id"] for p in predictions], dtype=int),
            np.asarray([p["confidence"] for p in predictions], dtype=np.float64),
            probabilities,
        )

    def __len__(self) -> int:
        return len(self.predicted)


def atc_threshold(scores: np.ndarray, accuracy: float) -> float:
    """The score above which as many answers lie as were right."""
    return float(np.quantile(scores, 1 - accuracy))


@dataclass(frozen=True)
class EstimatorStats:
    """What the estimators need from the training run, fitted on its validation split."""

    validation_accuracy: float
    atc: float  # the confidence threshold
    test_accuracy: float = float("nan")  # what the window's estimate is held against

    def as_dict(self) -> dict:
        return {"format": 1, "default": DEFAULT, **asdict(self)}

    @classmethod
    def from_dict(cls, stats: dict) -> EstimatorStats:
        return cls(**{key: stats[key] for key in cls.__dataclass_fields__ if key in stats})


def fit_estimators(validation: Answers, labels: np.ndarray, test_accuracy: float) -> EstimatorStats:
    accuracy = float((validation.predicted == labels).mean())
    return EstimatorStats(
        validation_accuracy=accuracy,
        atc=atc_threshold(validation.confidence, accuracy),
        test_accuracy=test_accuracy,
    )


def estimated_recall(probabilities: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each class's expected recall: its expected right answers over its expected inputs (NaN: none)."""
    return recall_of(expected_confusion(probabilities, predicted))


def recall_of(confusion: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(confusion) / confusion.sum(axis=1)


@dataclass(frozen=True)
class AnswerTotals:
    """What the estimators read of a window's answers, as sums: the monitor gets them from per-minute
    summaries of every replica (`serving.log.summary`) without reading one record."""

    n: int
    confidence_sum: float
    confident: float  # answers more confident than the ATC threshold
    confusion: np.ndarray | None  # the expected confusion matrix; None unless every answer logged its probabilities

    @classmethod
    def of(cls, stats: EstimatorStats, answers: Answers | AnswerTotals) -> AnswerTotals:
        if isinstance(answers, AnswerTotals):
            return answers
        confusion = None
        if answers.probabilities is not None:
            confusion = expected_confusion(answers.probabilities, answers.predicted)
        return cls(
            len(answers),
            float(answers.confidence.sum()),
            float((answers.confidence > stats.atc).sum()),
            confusion,
        )

    @classmethod
    def summarised(cls, stats: EstimatorStats, summary: TrafficSummary) -> AnswerTotals:
        complete = summary.with_probabilities == summary.n
        return cls(
            summary.n,
            summary.sums["confidence"],
            summary.share_above("confidence", stats.atc) * summary.n if summary.n else 0.0,
            summary.confusion if complete else None,
        )


def estimates(stats: EstimatorStats, answers: Answers | AnswerTotals) -> dict[str, float]:
    """Every estimator this window's answers allow (`cbpe` needs the probabilities)."""
    totals = AnswerTotals.of(stats, answers)
    if not totals.n:
        return {}
    found = {"average_confidence": totals.confidence_sum / totals.n, "atc": totals.confident / totals.n}
    if totals.confusion is not None:  # the expected confusion matrix's trace, over the answers
        found["cbpe"] = float(np.trace(totals.confusion)) / totals.n
    return found


@dataclass(frozen=True)
class Estimate:
    """A window's estimated accuracy by the default estimator, with a 95% interval for its size
    (sampling only: the estimator's own error under shift is on docs/estimate.md)."""

    estimator: str
    accuracy: float
    low: float
    high: float
    n: int
    all: dict[str, float]
    recall: dict[int, float]  # per class, from the expected confusion matrix (empty: no probabilities)

    def metrics(self) -> dict[str, float]:
        return {
            "estimated_accuracy": self.accuracy,
            "estimated_accuracy_low": self.low,
            "estimated_accuracy_high": self.high,
            **{f"estimate.{name}": value for name, value in self.all.items()},
        }


def estimate(stats: EstimatorStats, answers: Answers | AnswerTotals) -> Estimate | None:
    """The default estimator's figure, with every estimator's beside it and each class's recall."""
    totals = AnswerTotals.of(stats, answers)
    found = estimates(stats, totals)
    if not found:
        return None
    low, high = wilson(round(found[DEFAULT] * totals.n), totals.n)
    recall = {}
    if totals.confusion is not None:
        # NaN: a class nobody is expected to have sent
        recall = {k: float(r) for k, r in enumerate(recall_of(totals.confusion)) if not np.isnan(r)}
    return Estimate(DEFAULT, found[DEFAULT], low, high, totals.n, found, recall)


def fit_for_run(model, dataset: Dataset, params: TrainParams, test_probabilities: np.ndarray) -> EstimatorStats:
    """The estimators' statistics from the training run's validation split (as the calibration's)."""
    _train, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    validation = Answers.of(predict_probabilities(model, dataset.x_train[val_idx]))
    test = Answers.of(test_probabilities)
    return fit_estimators(validation, dataset.y_train[val_idx], float((test.predicted == dataset.y_test).mean()))


@task(name="fit-accuracy-estimators", cache_policy=NO_CACHE)
def estimator_task(
    model, dataset: Dataset, params: TrainParams, test_probabilities: np.ndarray, run_id: str
) -> EstimatorStats:
    """Fit the statistics the monitor and the shadow analysis estimate accuracy with, store them on the
    run (`ESTIMATOR_ARTIFACT`), and log each estimator's figure for the test split beside its truth."""
    stats = fit_for_run(model, dataset, params, test_probabilities)
    client = MlflowClient()
    client.log_dict(run_id, stats.as_dict(), ESTIMATOR_ARTIFACT)
    for name, value in estimates(stats, Answers.of(test_probabilities)).items():
        client.log_metric(run_id, f"estimate.test.{name}", value)
    get_run_logger().info(
        "accuracy estimators fitted: ATC threshold %.4f on validation accuracy %.4f",
        stats.atc,
        stats.validation_accuracy,
    )
    return stats


def load_estimator(run_id: str | None) -> EstimatorStats | None:
    """A run's estimator statistics; None for runs of versions before 0.4.0, which fitted none."""
    if not run_id:
        return None
    try:
        return EstimatorStats.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{ESTIMATOR_ARTIFACT}"))
    except MlflowException:
        return None
