"""Drift detection: compare served traffic (its per-minute summaries, merged over the window; or records
read back, summarised the same way) with the reference saved at training.

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

from serving.log.reader import first_feedback
from serving.log.records import INPUT_STATS, Prediction, Record
from serving.log.summary import BINS, TrafficSummary, summarise
from tasks.evaluation.estimate import AnswerTotals, EstimatorStats, estimate
from tasks.params import MonitorThresholds

EPS = 1e-4


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index between two distributions given as fractions."""
    ref = np.clip(np.asarray(reference, float), EPS, None)
    cur = np.clip(np.asarray(current, float), EPS, None)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def deciles(reference: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """The reference's inner quantile edges and its share between each two, so every bin holds a tenth."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    return edges, counts / counts.sum()


def binned_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI over the reference's deciles, of raw values (`decile_psi` reads a summary's histogram)."""
    edges, expected = deciles(reference, bins)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    return psi(expected, cur_counts / max(cur_counts.sum(), 1))


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
    """`judge` on records read back (one model version's): summarised as the server summarises them."""
    records = list(records)
    summary = summarise(predictions_of(records), first_feedback(records), len(reference["class_names"]))
    return judge(reference, summary, thresholds, estimator)


def judge(
    reference: dict, summary: TrafficSummary | None, thresholds: MonitorThresholds, estimator: EstimatorStats | None
) -> DriftReport:
    """The window's signals against the reference; `estimator`: the champion's statistics for the
    label-free accuracy estimate (None: fitted by no run before 0.4.0, so no estimate)."""
    if summary is None:
        return DriftReport(0, 0, enough_data=False)
    report = DriftReport(summary.n, summary.n_feedback)
    if summary.n < thresholds.min_records:
        report.enough_data = False
        return report
    m = report.metrics
    counts = summary.class_counts
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
        statistic, pvalue = binned_ks(np.asarray(reference[key]), summary, key)
        m[f"{key}_ks"], m[f"{key}_ks_pvalue"] = statistic, pvalue
        m[f"{key}_psi"] = decile_psi(np.asarray(reference[key]), summary, key)
        m[f"{key}_current_mean"] = summary.mean(key)
        ks_drift = statistic > thresholds.ks_statistic and pvalue < thresholds.ks_pvalue
        if ks_drift or m[f"{key}_psi"] > thresholds.input_psi:
            psi_found = m[f"{key}_psi"]
            report.reasons.append(f"input {key} shifted (KS {statistic:.3f}, p {pvalue:.1e}; PSI {psi_found:.3f})")
    if summary.ood_known:
        m["ood_share"] = summary.ood_flagged / summary.ood_known
        if m["ood_share"] > thresholds.max_ood_share:
            report.reasons.append(
                f"{m['ood_share']:.1%} of inputs flagged out of distribution (> {thresholds.max_ood_share:.0%})"
            )
    m["confidence_mean"] = summary.mean("confidence")
    m["confidence_drop"] = float(np.mean(reference["confidence"]) - m["confidence_mean"])
    if m["confidence_drop"] > thresholds.confidence_drop:
        report.reasons.append(f"mean confidence dropped by {m['confidence_drop']:.3f}")
    if estimator is not None:
        judge_estimate(report, estimator, summary, thresholds, reference["class_names"])
    labelled = int(summary.feedback.sum())
    if labelled:
        m["online_accuracy"] = float(np.trace(summary.feedback)) / labelled
        m["labelled"] = labelled
        if labelled >= thresholds.min_feedback and m["online_accuracy"] < thresholds.min_online_accuracy:
            report.reasons.append(f"online accuracy {m['online_accuracy']:.3f} on {labelled} labelled predictions")
    return report


def binned_ks(reference: np.ndarray, summary: TrafficSummary, key: str) -> tuple[float, float]:
    """The two-sample KS statistic between the reference's values and the window's histogram, read at
    the histogram's bin edges (within a bin's width of the raw statistic), and its asymptotic p-value."""
    edges = np.arange(1, BINS + 1) / BINS
    edges[-1] = np.inf  # the last bin holds 1.0 itself
    below = np.searchsorted(np.sort(reference), edges, side="left") / len(reference)
    statistic = float(np.max(np.abs(below - summary.cumulative(key))))
    n, m = summary.n, len(reference)
    return statistic, float(stats.kstwo.sf(statistic, round(n * m / (n + m))))


def decile_psi(reference: np.ndarray, summary: TrafficSummary, key: str) -> float:
    """PSI over the reference's deciles, the window's share in each read from its histogram."""
    edges, expected = deciles(reference)
    below = np.array([1 - summary.share_above(key, edge) for edge in edges])
    current = np.diff(np.concatenate([[0.0], below, [1.0]]))
    return psi(expected, np.clip(current, 0, None))


def judge_estimate(
    report: DriftReport,
    stats: EstimatorStats,
    summary: TrafficSummary,
    thresholds: MonitorThresholds,
    class_names: list[str],
) -> None:
    """The estimated accuracy and each class's recall into the report; a drop below the champion's test
    accuracy beyond the interval and the threshold is drift, said in wrong answers per thousand."""
    found = estimate(stats, AnswerTotals.summarised(stats, summary))
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


def plot_distributions(reference: dict, summary: TrafficSummary, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = reference["class_names"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    counts = summary.class_counts
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, reference["class_distribution"], 0.4, label="reference")
    axes[0].bar(x + 0.2, counts / max(counts.sum(), 1), 0.4, label="current")
    axes[0].set_xticks(x, names, rotation=60, ha="right")
    axes[0].set_title("predicted classes")
    coarse = 50  # the summary's bins, 20 at a time
    edges = np.linspace(0, 1, coarse + 1)
    for ax, key in zip(axes[1:], ("mean", "dark_fraction", "confidence"), strict=True):
        ax.hist(reference[key], bins=edges, alpha=0.5, density=True, label="reference")
        current = summary.histograms[key].reshape(coarse, -1).sum(axis=1)
        ax.stairs(current / max(current.sum(), 1) * coarse, edges, fill=True, alpha=0.5, label="current")
        ax.set_title(key)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
