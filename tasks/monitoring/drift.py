"""Drift detection: compare served traffic (prediction-log records) with the reference saved at training.

Signals: predicted-class distribution (PSI, chi-square), input statistics (KS test, PSI), mean
confidence, the share of inputs flagged out of distribution, accuracy estimated without labels
(`tasks.evaluation.estimate`) and online accuracy from labelled feedback.
Pure functions; `tasks.monitoring.monitor` wires them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from serving.log.reader import first_labels
from serving.log.records import INPUT_STATS, Prediction, Record
from tasks.evaluation.estimate import Answers, EstimatorStats, estimate
from tasks.params import MonitorThresholds

EPS = 1e-4


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


def detect_drift(
    reference: dict, records: Iterable[Record], thresholds: MonitorThresholds, estimator: EstimatorStats | None = None
) -> DriftReport:
    """The window's signals against the reference; `estimator`: the champion's statistics for the
    label-free accuracy estimate (None: fitted by no run before 0.4.0, so no estimate)."""
    records = list(records)
    predictions = predictions_of(records)
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
    flags = [r["in_distribution"] for r in predictions if "in_distribution" in r]
    if flags:
        m["ood_share"] = 1 - float(np.mean(flags))
        if m["ood_share"] > thresholds.max_ood_share:
            report.reasons.append(
                f"{m['ood_share']:.1%} of inputs flagged out of distribution (> {thresholds.max_ood_share:.0%})"
            )
    m["confidence_mean"] = float(np.mean([r["confidence"] for r in predictions]))
    m["confidence_drop"] = float(np.mean(reference["confidence"]) - m["confidence_mean"])
    if m["confidence_drop"] > thresholds.confidence_drop:
        report.reasons.append(f"mean confidence dropped by {m['confidence_drop']:.3f}")
    if estimator is not None:
        judge_estimate(report, estimator, predictions, thresholds, reference["class_names"])
    labelled = [(r["class_id"], feedback[r["id"]]) for r in predictions if r["id"] in feedback]
    if labelled:
        m["online_accuracy"] = float(np.mean([p == t for p, t in labelled]))
        m["labelled"] = len(labelled)
        if len(labelled) >= thresholds.min_feedback and m["online_accuracy"] < thresholds.min_online_accuracy:
            report.reasons.append(f"online accuracy {m['online_accuracy']:.3f} on {len(labelled)} labelled predictions")
    return report


def judge_estimate(
    report: DriftReport,
    stats: EstimatorStats,
    predictions: list[Prediction],
    thresholds: MonitorThresholds,
    class_names: list[str],
) -> None:
    """The estimated accuracy and each class's recall into the report; a drop below the champion's test
    accuracy beyond the interval and the threshold is drift, said in wrong answers per thousand."""
    found = estimate(stats, Answers.logged(predictions))
    if found is None:
        return
    m = report.metrics
    m |= found.metrics()
    m |= {f"estimated_recall.{class_names[k]}": recall for k, recall in found.recall.items()}
    m["estimated_drop"] = stats.test_accuracy - found.accuracy
    if stats.test_accuracy - found.high > thresholds.max_estimated_drop:
        report.reasons.append(
            f"estimated accuracy {found.accuracy:.3f} [{found.low:.3f}, {found.high:.3f}] ({found.estimator}, "
            f"without labels) is {m['estimated_drop']:.3f} below the champion's test accuracy "
            f"{stats.test_accuracy:.3f}: about {round(1000 * m['estimated_drop'])} more wrong answers per 1,000"
        )


def predictions_of(records: Iterable[Record]) -> list[Prediction]:
    return [r for r in records if r["type"] == "prediction"]


def plot_distributions(reference: dict, records: list[Record], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictions = predictions_of(records)
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
        ax.hist([r[key] for r in predictions], bins=30, alpha=0.5, density=True, label="current")  # type: ignore[literal-required]
        ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
