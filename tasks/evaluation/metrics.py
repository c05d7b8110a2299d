"""Test-split metrics (overall and per class) and the figures a reviewer looks at in MLflow."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from scipy import stats
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from serving.preprocessing import to_model_input
from tasks.data.dataset import Dataset


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion (0, 1 without trials)."""
    if trials == 0:
        return 0.0, 1.0
    interval = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return float(interval.low), float(interval.high)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]  # class name -> precision, recall, f1, support
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    @property
    def worst_class_recall(self) -> tuple[str, float]:
        name = min(self.per_class, key=lambda c: self.per_class[c]["recall"])
        return name, self.per_class[name]["recall"]

    def as_dict(self) -> dict:
        return asdict(self)

    def flat_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """MLflow metric names may not contain '/', so class names are slugged."""
        metrics = {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_precision": self.macro_precision,
            f"{prefix}macro_recall": self.macro_recall,
            f"{prefix}macro_f1": self.macro_f1,
        }
        for name, values in self.per_class.items():
            slug = "".join(ch if ch.isalnum() else "_" for ch in name).lower()
            for key in ("precision", "recall", "f1"):
                metrics[f"{prefix}{key}_{slug}"] = values[key]
        return metrics


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> Evaluation:
    """scikit-learn's metrics; a class never predicted has precision 0 (zero_division=0), not NaN."""
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    }
    return Evaluation(
        accuracy=float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    )


def predict_probabilities(model, pixels: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """Class probabilities for (N, 28, 28) 0-255 pixels, preprocessed exactly as the server does."""
    return np.asarray(model.predict(to_model_input(pixels), batch_size=batch_size, verbose=0))


@task(name="predict-test-split", cache_policy=NO_CACHE)
def predict_task(model, dataset: Dataset) -> np.ndarray:
    """The candidate's test-split probabilities, computed once per run: evaluation, the monitoring
    reference and the smoke test's expected answers all use them."""
    return predict_probabilities(model, dataset.x_test)


def plot_confusion_matrix(evaluation: Evaluation, class_names: Sequence[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(evaluation.confusion)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (accuracy {evaluation.accuracy:.4f})")
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color="white" if count > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(probabilities: np.ndarray, dataset: Dataset, run_id: str) -> Evaluation:
    evaluation = compute_metrics(dataset.y_test, probabilities.argmax(axis=1), dataset.class_names)
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in evaluation.flat_metrics().items()])
    client.log_dict(run_id, evaluation.as_dict(), "evaluation/metrics.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_confusion_matrix(evaluation, dataset.class_names, Path(tmp) / "confusion_matrix.png")
        client.log_artifact(run_id, str(path), "plots")
    worst, recall = evaluation.worst_class_recall
    get_run_logger().info(
        "test accuracy %.4f, macro F1 %.4f, worst class %s (recall %.4f)",
        evaluation.accuracy,
        evaluation.macro_f1,
        worst,
        recall,
    )
    return evaluation
