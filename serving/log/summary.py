"""Per-minute summaries of served traffic that merge by adding: what the drift monitor judges.

Every worker of every replica folds each minute's predictions of one model version into counts
(per answered class; histograms of the input statistics and of the confidence over 0-1; the expected
confusion matrix; out-of-distribution flags; feedback as answered x true class) and writes them when
the minute is over. Counts add, so any number of workers, replicas and nodes merge into one window in
time proportional to the number of minutes, not of predictions (SageMaker's and Databricks' monitors
read every record instead: at this server's rate an hour would take the monitor ~50 minutes). The
histograms' 1,000 bins keep the KS statistic and the deciles' PSI within 0.001 of the raw figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from serving.log.records import INPUT_STATS, FeedbackLine, Prediction

BINS = 1000  # over 0-1: every statistic summarised is a fraction
HISTOGRAMS = (*INPUT_STATS, "confidence")
FORMAT = 1


def _unset() -> np.ndarray:
    return np.zeros(0, np.int64)


def minute_of(timestamp: float) -> int:
    """The start of the minute `timestamp` falls in (epoch seconds)."""
    return int(timestamp // 60) * 60


def expected_confusion(probabilities: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(classes, classes): row i, column j the expected count of class-i inputs answered j (a column
    per class answered: several times faster than np.add.at over the rows)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    matrix = np.zeros((probabilities.shape[1],) * 2)
    for answered in np.unique(predicted):
        matrix[:, answered] = probabilities[predicted == answered].sum(axis=0)
    return matrix


def histogram(values: np.ndarray) -> np.ndarray:
    """Counts of `values` (0-1) in BINS equal bins; bin k holds [k/BINS, (k+1)/BINS)."""
    bins = np.clip((np.asarray(values, dtype=np.float64) * BINS).astype(np.int64), 0, BINS - 1)
    return np.bincount(bins, minlength=BINS)


@dataclass
class TrafficSummary:
    """One model version's traffic over whole minutes, `first` to `last` (epoch seconds of their starts)."""

    model: str
    version: int
    classes: int
    first: int
    last: int
    n: int = 0
    class_counts: np.ndarray = field(default_factory=lambda: _unset())  # (classes,)
    sums: dict[str, float] = field(default_factory=dict)  # per HISTOGRAMS key
    histograms: dict[str, np.ndarray] = field(default_factory=dict)  # per HISTOGRAMS key, (BINS,)
    ood_known: int = 0  # predictions by a version with the out-of-distribution flag
    ood_flagged: int = 0
    with_probabilities: int = 0
    confusion: np.ndarray = field(default_factory=lambda: _unset())  # expected: row true, column answered
    feedback: np.ndarray = field(default_factory=lambda: _unset())  # counted: row true, column answered
    feedback_unmatched: int = 0  # labels of ids that do not name their class (issued before 0.5.0)
    feedback_reviewed: int = 0
    # (id, true class, reviewed) of each label: retraining looks up their inputs (bounded by the feedback rate)
    labels: list[tuple[str, int, bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.classes
        if not self.class_counts.size:
            self.class_counts = np.zeros(k, np.int64)
        if not self.confusion.size:
            self.confusion = np.zeros((k, k))
        if not self.feedback.size:
            self.feedback = np.zeros((k, k), np.int64)
        for key in HISTOGRAMS:
            self.sums.setdefault(key, 0.0)
            self.histograms.setdefault(key, np.zeros(BINS, np.int64))

    @classmethod
    def empty(cls, model: str, version: int, classes: int, minute: int) -> TrafficSummary:
        return cls(model, version, classes, minute, minute)

    def add_predictions(
        self,
        class_ids: np.ndarray,
        columns: dict[str, np.ndarray],
        probabilities: np.ndarray | None = None,
        in_distribution: np.ndarray | None = None,
    ) -> None:
        """`columns`: every HISTOGRAMS key, one value per prediction."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        self.n += len(class_ids)
        self.class_counts += np.bincount(class_ids, minlength=self.classes)[: self.classes]
        for key in HISTOGRAMS:
            values = np.asarray(columns[key], dtype=np.float64)
            self.sums[key] += float(values.sum())
            self.histograms[key] += histogram(values)
        if probabilities is not None:
            self.confusion += expected_confusion(probabilities, class_ids)
            self.with_probabilities += len(class_ids)
        if in_distribution is not None:
            self.ood_known += len(in_distribution)
            self.ood_flagged += len(in_distribution) - int(np.count_nonzero(in_distribution))

    def add_feedback(self, record_id: str, answered: int | None, true_class: int, reviewed: bool = False) -> None:
        self.labels.append((record_id, true_class, reviewed))
        if answered is None or not (0 <= answered < self.classes and 0 <= true_class < self.classes):
            self.feedback_unmatched += 1
        else:
            self.feedback[true_class, answered] += 1
        self.feedback_reviewed += int(reviewed)

    def merge(self, other: TrafficSummary) -> TrafficSummary:
        if (other.model, other.version, other.classes) != (self.model, self.version, self.classes):
            raise ValueError(f"cannot merge {other.model} v{other.version} into {self.model} v{self.version}")
        self.first, self.last = min(self.first, other.first), max(self.last, other.last)
        self.n += other.n
        self.class_counts += other.class_counts
        for key in HISTOGRAMS:
            self.sums[key] += other.sums[key]
            self.histograms[key] += other.histograms[key]
        self.ood_known += other.ood_known
        self.ood_flagged += other.ood_flagged
        self.with_probabilities += other.with_probabilities
        self.confusion += other.confusion
        self.feedback += other.feedback
        self.feedback_unmatched += other.feedback_unmatched
        self.feedback_reviewed += other.feedback_reviewed
        self.labels.extend(other.labels)
        return self

    @property
    def n_feedback(self) -> int:
        return int(self.feedback.sum()) + self.feedback_unmatched

    def mean(self, key: str) -> float:
        return self.sums[key] / self.n if self.n else float("nan")

    def cumulative(self, key: str) -> np.ndarray:
        """The share of predictions below each bin's upper edge (k + 1) / BINS."""
        return np.cumsum(self.histograms[key]) / max(self.n, 1)

    def share_above(self, key: str, threshold: float) -> float:
        """The share of predictions with `key` above `threshold` (the threshold's own bin split evenly
        by where the threshold falls in it)."""
        position = float(np.clip(threshold, 0, 1)) * BINS
        k = min(int(position), BINS - 1)
        counts = self.histograms[key]
        above = counts[k + 1 :].sum() + counts[k] * (k + 1 - position)
        return float(above) / self.n if self.n else float("nan")

    def to_json(self) -> bytes:
        def sparse(counts: np.ndarray) -> dict[str, list[int]]:
            nonzero = np.flatnonzero(counts)
            return {"bins": nonzero.tolist(), "counts": counts[nonzero].tolist()}

        document: dict[str, Any] = {
            "format": FORMAT,
            "model": self.model,
            "version": self.version,
            "classes": self.classes,
            "first": self.first,
            "last": self.last,
            "n": self.n,
            "class_counts": self.class_counts.tolist(),
            "sums": self.sums,
            "histograms": {key: sparse(counts) for key, counts in self.histograms.items()},
            "ood_known": self.ood_known,
            "ood_flagged": self.ood_flagged,
            "with_probabilities": self.with_probabilities,
            "confusion": np.round(self.confusion, 4).tolist(),
            "feedback": self.feedback.tolist(),
            "feedback_unmatched": self.feedback_unmatched,
            "feedback_reviewed": self.feedback_reviewed,
            "labels": self.labels,
        }
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, data: bytes) -> TrafficSummary:
        document = orjson.loads(data)
        histograms = {}
        for key, found in document["histograms"].items():
            counts = np.zeros(BINS, np.int64)
            counts[np.asarray(found["bins"], dtype=np.int64)] = found["counts"]
            histograms[key] = counts
        return cls(
            model=document["model"],
            version=document["version"],
            classes=document["classes"],
            first=document["first"],
            last=document["last"],
            n=document["n"],
            class_counts=np.asarray(document["class_counts"], np.int64),
            sums={key: float(value) for key, value in document["sums"].items()},
            histograms=histograms,
            ood_known=document["ood_known"],
            ood_flagged=document["ood_flagged"],
            with_probabilities=document["with_probabilities"],
            confusion=np.asarray(document["confusion"], np.float64),
            feedback=np.asarray(document["feedback"], np.int64),
            feedback_unmatched=document["feedback_unmatched"],
            feedback_reviewed=document["feedback_reviewed"],
            labels=[(record_id, true_class, reviewed) for record_id, true_class, reviewed in document["labels"]],
        )


def summarise(predictions: list[Prediction], feedback: list[FeedbackLine], classes: int) -> TrafficSummary | None:
    """The summary of one model version's records, as the server would have written it (tests, the
    shadow analysis, logs read back); None without any record."""
    first = predictions[0] if predictions else feedback[0] if feedback else None
    if first is None:
        return None
    times = [r["time"] for r in (*predictions, *feedback)]
    summary = TrafficSummary(first["model"], first["version"], classes, minute_of(min(times)), minute_of(max(times)))
    if predictions:
        columns = {key: np.asarray([p[key] for p in predictions]) for key in HISTOGRAMS}  # type: ignore[literal-required]
        probabilities = None
        if all("probabilities" in p for p in predictions):
            probabilities = np.asarray([p["probabilities"] for p in predictions])
        flags = None
        if all("in_distribution" in p for p in predictions):
            flags = np.asarray([p["in_distribution"] for p in predictions])
        summary.add_predictions(np.asarray([p["class_id"] for p in predictions]), columns, probabilities, flags)
    for record in feedback:
        summary.add_feedback(
            record["id"], record.get("class_id"), record["true_class_id"], bool(record.get("reviewed"))
        )
    return summary


def summary_name(summary: TrafficSummary, writer: str, written_ns: int) -> str:
    """A file name no other writer or later write of the same minute takes."""
    return f"{summary.first}-{writer}-{written_ns}.json"


def summary_directory(root: Path, model: str, version: int) -> Path:
    return root / model / str(version)
