"""Drift detection: compare served traffic (the prediction log) with the reference saved at training.

Signals: predicted-class distribution (PSI, chi-square), input statistics (KS test, PSI), mean
confidence, and online accuracy from labelled feedback. Pure functions; flows/monitor.py wires them.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field
from scipy import stats

from serving.prediction_log import input_summary
from serving.preprocessing import to_model_input
from tasks.data import Dataset

INPUT_STATS = ("mean", "std", "dark_fraction")
REFERENCE_SAMPLE = 5000
EPS = 1e-4


class MonitorThresholds(BaseModel):
    """PSI above 0.2 is the usual 'significant shift'; KS needs both a large statistic and a small p."""

    class_psi: float = Field(default=0.2, gt=0)
    input_psi: float = Field(default=0.2, gt=0)
    ks_statistic: float = Field(default=0.1, gt=0, le=1)
    ks_pvalue: float = Field(default=0.01, gt=0, lt=1)
    confidence_drop: float = Field(default=0.05, gt=0, le=1)
    min_online_accuracy: float = Field(default=0.8, ge=0, le=1)
    min_feedback: int = Field(default=30, ge=1, description="labelled predictions needed to judge accuracy")
    min_records: int = Field(default=200, ge=1, description="predictions needed to judge a window at all")
    max_feedback_samples: int = Field(default=1000, ge=0, description="labelled inputs a retraining takes per window")


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


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two distributions given as fractions."""
    ref = np.clip(np.asarray(reference, float), EPS, None)
    cur = np.clip(np.asarray(current, float), EPS, None)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def binned_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI over the reference's deciles, so every bin holds a tenth of the reference."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    return psi(ref_counts / ref_counts.sum(), cur_counts / max(cur_counts.sum(), 1))


@dataclass
class DriftReport:
    n_predictions: int
    n_feedback: int
    metrics: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    enough_data: bool = True

    @property
    def drifted(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict:
        return {**asdict(self), "drifted": self.drifted}


def read_records(log_dir: Path, since: float, until: float | None = None) -> list[dict]:
    """Every record in the window from every worker's (rotated) files; torn last lines are skipped."""
    until = until or time.time()
    records = []
    for path in sorted(Path(log_dir).glob("predictions-*.jsonl")):
        if path.stat().st_mtime < since:
            continue
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if since <= record.get("time", 0) <= until:
                    records.extend(expand(record))
    return records


def expand(record: dict) -> list[dict]:
    """A columnar `predictions` line becomes one `prediction` record per image."""
    if record.get("type") != "predictions":
        return [record]
    columns = [key for key in ("class_id", "confidence", *INPUT_STATS) if key in record]
    shared = {"type": "prediction", "time": record["time"], "model": record["model"], "version": record["version"]}
    expanded = []
    for i, record_id in enumerate(record["ids"]):
        item = {**shared, "id": record_id, **{key: record[key][i] for key in columns}}
        if "pixels" in record:
            item["pixels"] = record["pixels"][i]
        expanded.append(item)
    return expanded


def detect_drift(reference: dict, records: Iterable[dict], thresholds: MonitorThresholds) -> DriftReport:
    records = list(records)
    predictions = [r for r in records if r.get("type") == "prediction"]
    feedback = first_labels(records)
    report = DriftReport(len(predictions), len(feedback))
    if len(predictions) < thresholds.min_records:
        report.enough_data = False
        return report
    m = report.metrics
    n_classes = len(reference["class_names"])
    counts = np.bincount([r["class_id"] for r in predictions], minlength=n_classes)
    expected = np.asarray(reference["class_distribution"])
    m["class_psi"] = psi(expected, counts / counts.sum())
    expected_counts = np.clip(expected, EPS, None)
    expected_counts = expected_counts / expected_counts.sum() * counts.sum()
    m["class_chi2_pvalue"] = float(stats.chisquare(counts, expected_counts).pvalue)
    if m["class_psi"] > thresholds.class_psi:
        report.reasons.append(
            f"predicted-class distribution shifted (PSI {m['class_psi']:.3f} > {thresholds.class_psi})"
        )
    for key in INPUT_STATS:
        current = np.asarray([r[key] for r in predictions])
        ks = stats.ks_2samp(reference[key], current)
        m[f"{key}_ks"], m[f"{key}_ks_pvalue"] = float(ks.statistic), float(ks.pvalue)
        m[f"{key}_psi"] = binned_psi(np.asarray(reference[key]), current)
        m[f"{key}_current_mean"] = float(current.mean())
        ks_drift = ks.statistic > thresholds.ks_statistic and ks.pvalue < thresholds.ks_pvalue
        if ks_drift or m[f"{key}_psi"] > thresholds.input_psi:
            report.reasons.append(
                f"input {key} shifted (KS {ks.statistic:.3f}, p {ks.pvalue:.1e}; PSI {m[f'{key}_psi']:.3f})"
            )
    m["confidence_mean"] = float(np.mean([r["confidence"] for r in predictions]))
    m["confidence_drop"] = float(np.mean(reference["confidence"]) - m["confidence_mean"])
    if m["confidence_drop"] > thresholds.confidence_drop:
        report.reasons.append(f"mean confidence dropped by {m['confidence_drop']:.3f}")
    labelled = [(r["class_id"], feedback[r["id"]]) for r in predictions if r["id"] in feedback]
    if labelled:
        m["online_accuracy"] = float(np.mean([p == t for p, t in labelled]))
        m["labelled"] = len(labelled)
        if len(labelled) >= thresholds.min_feedback and m["online_accuracy"] < thresholds.min_online_accuracy:
            report.reasons.append(f"online accuracy {m['online_accuracy']:.3f} on {len(labelled)} labelled predictions")
    return report


def first_labels(records: Iterable[dict]) -> dict[str, int]:
    """The first label given to each prediction id; later ones (from another worker) are ignored."""
    labels: dict[str, int] = {}
    for r in sorted((r for r in records if r.get("type") == "feedback"), key=lambda r: r["time"]):
        labels.setdefault(r["id"], r["true_class_id"])
    return labels


def labelled_samples(records: Iterable[dict], max_samples: int = 1000) -> list[tuple[str, np.ndarray, int]]:
    """(id, 28x28 uint8 pixels, true class) for feedback on a logged prediction that stored its input:
    the first label per id, at most `max_samples` per window, so a flood of feedback cannot outweigh
    the training set."""
    records = list(records)
    pixels = {r["id"]: r["pixels"] for r in records if r.get("type") == "prediction" and "pixels" in r}
    samples = [
        (record_id, np.frombuffer(base64.b64decode(pixels[record_id]), np.uint8).reshape(28, 28), class_id)
        for record_id, class_id in first_labels(records).items()
        if record_id in pixels
    ]
    return samples[:max_samples]


def plot_distributions(reference: dict, records: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictions = [r for r in records if r.get("type") == "prediction"]
    names = reference["class_names"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    counts = np.bincount([r["class_id"] for r in predictions], minlength=len(names))
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, reference["class_distribution"], 0.4, label="reference")
    axes[0].bar(x + 0.2, counts / max(counts.sum(), 1), 0.4, label="current")
    axes[0].set_xticks(x, names, rotation=60, ha="right")
    axes[0].set_title("predicted classes")
    for ax, key in zip(axes[1:], ("mean", "dark_fraction", "confidence"), strict=True):
        ax.hist(reference[key], bins=30, alpha=0.5, density=True, label="reference")
        ax.hist([r[key] for r in predictions], bins=30, alpha=0.5, density=True, label="current")
        ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


REFERENCE_ARTIFACT = "monitoring/reference.json"


@task(name="save-monitoring-reference", cache_policy=NO_CACHE)
def reference_task(probabilities: np.ndarray, dataset: Dataset, run_id: str) -> None:
    """The held-out split as the model sees it, stored on the run: what `monitor-drift` compares with."""
    reference = build_reference(probabilities, dataset.x_test, list(dataset.class_names))
    MlflowClient().log_dict(run_id, reference, REFERENCE_ARTIFACT)


def load_reference(run_id: str) -> dict:
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{REFERENCE_ARTIFACT}")
