"""The shadow analysis: production's and the candidate's answers to the same live requests (the
`shadow` records the mirror writes), judged against the release's thresholds. Pure functions: the
release task reads the log and calls them at an interval until they decide.

What is compared, and why:
- the shadow's failures (no answer in time, an error status) per mirrored request;
- top-1 disagreement on images both models flag in distribution (two classifiers guess differently on
  non-clothing, which says nothing), with a 95% Wilson interval, against what the test split measured
  between the same two models plus a margin, and an absolute bound;
- the shadow's p99 latency against production's (a floor of 10 ms on production's side: below it the
  loopback round trip the shadow's figure includes dominates);
- the share of inputs each flags as not clothing;
- where feedback labelled mirrored requests, the paired test of the gates (McNemar) on them.
Each model's accuracy on the mirrored images, estimated without labels (`tasks.evaluation.estimate`,
each with its own run's statistics), is reported beside them; it decides nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from serving.log.reader import first_labels
from serving.log.records import Record, ShadowLine
from tasks.evaluation.estimate import Answers, EstimatorStats, estimate
from tasks.evaluation.gates import Paired
from tasks.evaluation.metrics import wilson
from tasks.params import ReleaseParams

Outcome = Literal["promote", "abort", "wait", "inconclusive"]
MIN_JUDGED = 20  # fewer requests (or images) than this decide nothing, however they look
LATENCY_FLOOR_SECONDS = 0.010


@dataclass(frozen=True)
class ShadowEvidence:
    """What the mirrored requests so far say about the candidate next to production."""

    requests: int = 0  # mirrored requests
    errors: int = 0  # of those, the shadow did not answer 200 with one prediction per image
    images: int = 0  # images both answered
    compared: int = 0  # of those, both flagged in distribution: where disagreement counts
    disagreements: int = 0
    p99_production: float | None = None  # seconds, production's handling time
    p99_shadow: float | None = None  # seconds, the shadow's round trip from production
    ood_share_production: float | None = None
    ood_share_shadow: float | None = None
    ood_difference_interval: tuple[float, float] | None = None  # 95%, of the paired flags' difference
    labelled: int = 0  # images with feedback, judged paired
    paired: Paired | None = None
    estimated_production: float | None = None  # accuracy without labels, on the images both answered
    estimated_shadow: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def disagreement(self) -> float:
        return self.disagreements / self.compared if self.compared else 0.0

    @property
    def disagreement_interval(self) -> tuple[float, float]:
        return wilson(self.disagreements, self.compared)

    @property
    def latency_ratio(self) -> float | None:
        if self.p99_shadow is None or self.p99_production is None:
            return None
        return self.p99_shadow / max(self.p99_production, LATENCY_FLOOR_SECONDS)

    @property
    def ood_share_difference(self) -> float | None:
        if self.ood_share_shadow is None or self.ood_share_production is None:
            return None
        return self.ood_share_shadow - self.ood_share_production

    def metrics(self) -> dict[str, float]:
        """The figures MLflow records on the candidate's run (`shadow.*`)."""
        low, high = self.disagreement_interval
        figures = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "images": self.images,
            "compared": self.compared,
            "disagreement": self.disagreement,
            "disagreement_low": low,
            "disagreement_high": high,
            "latency_ratio": self.latency_ratio,
            "ood_share_difference": self.ood_share_difference,
            "ood_share_difference_low": self.ood_difference_interval[0] if self.ood_difference_interval else None,
            "ood_share_difference_high": self.ood_difference_interval[1] if self.ood_difference_interval else None,
            "labelled": self.labelled,
            "labelled_difference": self.paired.difference if self.paired else None,
            "labelled_p_worse": self.paired.p_worse if self.paired else None,
            "estimated_accuracy": self.estimated_shadow,
            "estimated_accuracy_production": self.estimated_production,
        }
        return {f"shadow.{k}": float(v) for k, v in figures.items() if v is not None}


@dataclass(frozen=True)
class Estimators:
    """Each model's accuracy-estimator statistics (None: its run fitted none, before 0.4.0)."""

    production: EstimatorStats | None = None
    shadow: EstimatorStats | None = None


def estimated(stats: EstimatorStats | None, predicted: np.ndarray, confidence: np.ndarray) -> float | None:
    found = estimate(stats, Answers(predicted, confidence)) if stats is not None else None
    return found.accuracy if found else None


def ood_text(evidence: ShadowEvidence) -> str:
    if evidence.ood_share_difference is None or evidence.ood_difference_interval is None:
        return "n/a"
    low, high = evidence.ood_difference_interval
    return f"{evidence.ood_share_difference:+.4f} [{low:+.4f}, {high:+.4f}]"


def paired_interval(shadow: np.ndarray, production: np.ndarray) -> tuple[float, float]:
    """95% interval of the difference between two shares measured on the same images (each image counts
    +1, 0 or -1): only images the two models flag differently widen it."""
    differences = shadow.astype(float) - production.astype(float)
    spread = 1.96 * differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else 1.0
    return float(differences.mean() - spread), float(differences.mean() + spread)


def shadow_evidence(
    records: list[Record], shadow_version: int, estimators: Estimators = Estimators()
) -> ShadowEvidence:
    """The evidence of every `shadow` record of this candidate version (and the feedback on them)."""
    paired: list[ShadowLine] = [r for r in records if r["type"] == "shadow" and r["shadow_version"] == shadow_version]
    if not paired:
        return ShadowEvidence()
    answered = [r for r in paired if r["shadow_status"] == 200 and "shadow_class_id" in r]
    production, shadow = column(answered, "class_id", int), column(answered, "shadow_class_id", int)
    both_usual = np.concatenate([usual_in_both(r) for r in answered]) if answered else np.array([], bool)
    flagged = [r for r in answered if "in_distribution" in r and "shadow_in_distribution" in r]
    ood_production = ~column(flagged, "in_distribution", bool) if flagged else None
    ood_shadow = ~column(flagged, "shadow_in_distribution", bool) if flagged else None
    labels = first_labels(records)
    ids = [i for r in answered for i in r["ids"]]
    labelled = np.array([i in labels for i in ids], bool)
    truth = np.array([labels.get(i, -1) for i in ids])
    return ShadowEvidence(
        requests=len(paired),
        errors=len(paired) - len(answered),
        images=len(production),
        compared=int(both_usual.sum()),
        disagreements=int((production != shadow)[both_usual].sum()),
        p99_production=float(np.percentile([r["seconds"] for r in paired], 99)),
        p99_shadow=float(np.percentile([r["shadow_seconds"] for r in answered], 99)) if answered else None,
        ood_share_production=float(ood_production.mean()) if ood_production is not None else None,
        ood_share_shadow=float(ood_shadow.mean()) if ood_shadow is not None else None,
        ood_difference_interval=paired_interval(ood_shadow, ood_production)
        if ood_shadow is not None and ood_production is not None
        else None,
        labelled=int(labelled.sum()),
        paired=Paired.of(shadow[labelled] == truth[labelled], production[labelled] == truth[labelled])
        if labelled.any()
        else None,
        estimated_production=estimated(estimators.production, production, column(answered, "confidence", float)),
        estimated_shadow=estimated(estimators.shadow, shadow, column(answered, "shadow_confidence", float)),
    )


def column(records: list[ShadowLine], key: str, dtype: type) -> np.ndarray:
    """One field of every record, image by image (records hold one entry per image)."""
    return np.concatenate([np.asarray(r[key], dtype) for r in records]) if records else np.array([], dtype)  # type: ignore[literal-required]


def usual_in_both(record: ShadowLine) -> np.ndarray:
    """Images both models flag in distribution (all, for models exported without the flag)."""
    count = len(record["ids"])
    production = np.asarray(record.get("in_distribution", [True] * count), bool)
    shadow = np.asarray(record.get("shadow_in_distribution", [True] * count), bool)
    return production & shadow


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: list[str]
    evidence: ShadowEvidence
    allowed_disagreement: float
    offline_disagreement: float | None

    def table(self) -> list[dict[str, str]]:
        """The analysis as rows for a Prefect table artifact."""
        evidence, (low, high) = self.evidence, self.evidence.disagreement_interval
        offline = "n/a" if self.offline_disagreement is None else f"{self.offline_disagreement:.4f}"
        ratio = evidence.latency_ratio
        return [
            {"check": "mirrored requests", "value": f"{evidence.requests} ({evidence.images} images)"},
            {"check": "shadow errors", "value": f"{evidence.errors} ({evidence.error_rate:.4f})"},
            {
                "check": "disagreement (both in distribution)",
                "value": f"{evidence.disagreement:.4f} [{low:.4f}, {high:.4f}] on {evidence.compared}; "
                f"allowed {self.allowed_disagreement:.4f} (test split {offline})",
            },
            {"check": "p99 latency ratio", "value": "n/a" if ratio is None else f"{ratio:.2f}"},
            {"check": "not-clothing share difference", "value": ood_text(evidence)},
            {"check": "labelled", "value": labelled_text(evidence)},
            {"check": "estimated accuracy (no labels)", "value": estimated_text(evidence)},
            {"check": "decision", "value": f"{self.outcome}: {'; '.join(self.reasons)}"},
        ]

    def as_dict(self) -> dict:
        return {
            "outcome": self.outcome,
            "reasons": self.reasons,
            "allowed_disagreement": self.allowed_disagreement,
            "offline_disagreement": self.offline_disagreement,
            **{k.removeprefix("shadow."): v for k, v in self.evidence.metrics().items()},
            "paired": asdict(self.evidence.paired) if self.evidence.paired else None,
        }


def estimated_text(evidence: ShadowEvidence) -> str:
    def figure(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return f"candidate {figure(evidence.estimated_shadow)}, production {figure(evidence.estimated_production)}"


def labelled_text(evidence: ShadowEvidence) -> str:
    paired = evidence.paired
    if paired is None:
        return "none yet"
    return (
        f"{evidence.labelled} images: shadow {paired.difference:+.4f} accuracy, "
        f"{paired.lost} lost / {paired.won} won, p(worse) {paired.p_worse:.4f}"
    )


def allowed_disagreement(params: ReleaseParams, offline: float | None) -> float:
    """What the test split measured between the two models plus the margin, never above the bound."""
    return (
        params.max_disagreement
        if offline is None
        else min(params.max_disagreement, offline + params.disagreement_margin)
    )


def judge(evidence: ShadowEvidence, params: ReleaseParams, offline: float | None, final: bool) -> Verdict:
    """Abort as soon as the evidence shows a fault (interval bounds, so early noise does not abort);
    promote once enough images were compared and every check passes; otherwise wait, and at the
    deadline (`final`) call it inconclusive."""
    allowed = allowed_disagreement(params, offline)
    faults = []
    if evidence.requests >= MIN_JUDGED and wilson(evidence.errors, evidence.requests)[0] > params.max_error_rate:
        faults.append(f"the shadow failed {evidence.errors} of {evidence.requests} mirrored requests")
    low, high = evidence.disagreement_interval
    if evidence.compared >= MIN_JUDGED and low > allowed:
        faults.append(
            f"it disagrees with production on {evidence.disagreement:.1%} of {evidence.compared} live images "
            f"(95% interval {low:.1%}-{high:.1%}; allowed {allowed:.1%})"
        )
    paired = evidence.paired
    if paired is not None and paired.p_worse < params.max_p_worse and paired.difference < 0:
        faults.append(f"it is worse on labelled live requests: {labelled_text(evidence)}")
    enough = evidence.compared >= params.min_images
    ratio, ood = evidence.latency_ratio, evidence.ood_share_difference
    if enough and ratio is not None and ratio > params.max_latency_ratio:
        faults.append(f"its p99 latency is {ratio:.2f}x production's (allowed {params.max_latency_ratio:.2f}x)")
    beyond = params.max_ood_share_difference
    ood_low, ood_high = evidence.ood_difference_interval or (0.0, 0.0)
    if enough and ood is not None and (ood_low > beyond or ood_high < -beyond):
        faults.append(
            f"it flags {ood:+.1%} more inputs as not clothing (95% interval {ood_low:+.1%} to {ood_high:+.1%}; "
            f"allowed {beyond:.1%})"
        )
    if faults:
        return Verdict("abort", faults, evidence, allowed, offline)
    if enough and high <= allowed and evidence.error_rate <= params.max_error_rate:
        reason = (
            f"{evidence.compared} live images compared: disagreement {evidence.disagreement:.1%} "
            f"(at most {high:.1%}) within {allowed:.1%}, errors {evidence.error_rate:.2%}"
        )
        return Verdict("promote", [reason], evidence, allowed, offline)
    missing = (
        f"{evidence.compared} of {params.min_images} images compared"
        if not enough
        else f"disagreement up to {high:.1%} is not yet within {allowed:.1%}"
    )
    return Verdict("inconclusive" if final else "wait", [missing], evidence, allowed, offline)
