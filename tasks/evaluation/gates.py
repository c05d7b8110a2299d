"""Quality gates a candidate must pass before it may enter the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from scipy import stats

from tasks.evaluation.metrics import Evaluation
from tasks.evaluation.ood import OodReport
from tasks.events import GATES_FAILED, emit
from tasks.params import GateThresholds, ModelRef

TEST = "test"  # the comparison on the test split; the others are named after their hold-out slice


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on this run's test split and engineered hold-out, image by image: which
    images it got right (`correct[TEST]`, `correct[<slice>]`), so the comparison with the candidate is paired."""

    ref: ModelRef
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    test_predictions: np.ndarray | None = None  # its top-1 class per test image

    @property
    def accuracy(self) -> float:
        return float(self.correct[TEST].mean())

    def disagreement(self, candidate_probabilities: np.ndarray) -> float | None:
        """The share of test images the candidate and the champion answer differently: what a shadow
        release expects to see live, before the traffic's own mix."""
        if self.test_predictions is None or len(self.test_predictions) != len(candidate_probabilities):
            return None
        return float(np.mean(candidate_probabilities.argmax(axis=1) != self.test_predictions))

    @property
    def slice_accuracy(self) -> dict[str, float]:
        return {name: float(hits.mean()) for name, hits in self.correct.items() if name != TEST}


@dataclass(frozen=True)
class Evidence:
    """What the gates judge a candidate by: its test-split metrics, which images of the test split
    (`correct[TEST]`) and of each hold-out slice (`correct[<slice>]`) it got right, as a champion's are
    scored, and its out-of-distribution flag's report."""

    evaluation: Evaluation
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    ood: OodReport | None = None

    @property
    def slice_accuracy(self) -> dict[str, float]:
        return {name: float(hits.mean()) for name, hits in self.correct.items() if name != TEST}


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


class GateFailed(RuntimeError):
    """A candidate failed at least one gate; the message lists every failing gate with its numbers."""


@dataclass(frozen=True)
class Paired:
    """Candidate and champion on the same images: McNemar's exact test, one-sided, for non-inferiority.
    Only the images one of them got right tell them apart; were the candidate worse by exactly `margin`
    (the most the policy tolerates), how likely would it lose at least `lost` of those? Two models of the
    same recipe with different seeds do differ a little on any slice, and a margin keeps that from
    counting as a regression; a margin of 0 asks whether the candidate is worse at all."""

    difference: float  # candidate accuracy minus champion accuracy
    lost: int  # images only the champion got right
    won: int  # images only the candidate got right
    p_worse: float

    @classmethod
    def of(cls, candidate: np.ndarray, champion: np.ndarray, margin: float = 0.0) -> Paired:
        lost = int(np.count_nonzero(champion & ~candidate))
        won = int(np.count_nonzero(candidate & ~champion))
        discordant = lost + won
        # At a drop of exactly `margin`, a disagreement goes the champion's way with this probability.
        p_lost = (discordant + margin * len(candidate)) / (2 * discordant) if discordant else 1.0
        p = stats.binomtest(lost, discordant, p_lost, alternative="greater").pvalue if p_lost < 1 else 1.0
        return cls(float(candidate.mean() - champion.mean()), lost, won, float(p))


def holm_rejections(p_values: dict[str, float], rate: float) -> dict[str, float | None]:
    """Holm's step-down procedure: the family of comparisons wrongly rejects an equally good candidate
    with probability at most `rate`. Returns each comparison's threshold where it is rejected, else None."""
    verdicts: dict[str, float | None] = dict.fromkeys(p_values)
    for rank, (name, p) in enumerate(sorted(p_values.items(), key=lambda item: item[1])):
        threshold = rate / (len(p_values) - rank)
        if p > threshold:
            break
        verdicts[name] = threshold
    return verdicts


def check_gates(
    evidence: Evidence, thresholds: GateThresholds, champion: ChampionScore | None = None
) -> list[GateResult]:
    """Every gate is evaluated (no short-circuit) so a reviewer sees all verdicts at once: the absolute
    floors, then each comparison with the champion on the same images (test split and every slice), a
    paired test whose false rejections are bounded for all comparisons together (Holm), then the slices'
    floors, then the out-of-distribution flag's."""
    candidate, candidate_correct = evidence.evaluation, evidence.correct
    worst_name, worst_recall = candidate.worst_class_recall
    results = [
        GateResult(
            "min_accuracy",
            candidate.accuracy >= thresholds.min_accuracy,
            candidate.accuracy,
            thresholds.min_accuracy,
            f"test accuracy {candidate.accuracy:.4f} vs minimum {thresholds.min_accuracy:.4f}",
        ),
        GateResult(
            "min_class_recall",
            worst_recall >= thresholds.min_class_recall,
            worst_recall,
            thresholds.min_class_recall,
            f"worst class '{worst_name}' recall {worst_recall:.4f} vs minimum {thresholds.min_class_recall:.4f}",
        ),
    ]
    paired = {
        name: Paired.of(
            candidate_correct[name],
            hits,
            thresholds.max_regression if name == TEST else thresholds.max_slice_regression,
        )
        for name, hits in (champion.correct if champion else {}).items()
        if name in candidate_correct
    }
    rejected = holm_rejections({name: p.p_worse for name, p in paired.items()}, thresholds.false_rejection_rate)
    label = f"champion v{champion.ref.version}" if champion else "champion"

    def comparison(name: str, margin: float) -> tuple[bool, str]:
        p, threshold = paired[name], rejected[name]
        if threshold is None:
            verdict = f"not shown worse (p {p.p_worse:.2g})"
        else:
            verdict = f"worse (p {p.p_worse:.2g} <= {threshold:.2g})"
        return threshold is None, (
            f"{p.difference:+.4f} vs {label} on the same images ({p.won} won, {p.lost} lost, margin {margin:g}): "
            f"{verdict}; {len(paired)} comparisons at a false-rejection rate of {thresholds.false_rejection_rate:g}"
        )

    if TEST not in paired:
        results.append(GateResult("no_regression", True, None, None, "no champion yet: nothing to regress from"))
    else:
        passed, detail = comparison(TEST, thresholds.max_regression)
        results.append(
            GateResult(
                "no_regression",
                passed,
                paired[TEST].difference,
                paired[TEST].p_worse,
                f"test accuracy {candidate.accuracy:.4f}, {detail}",
            )
        )
    for name, accuracy in evidence.slice_accuracy.items():
        floor = thresholds.min_slice_accuracy.get(name)
        passed = floor is None or accuracy >= floor
        detail = f"{name} accuracy {accuracy:.4f} vs minimum " + ("none" if floor is None else f"{floor:.4f}")
        if name in paired:
            better, versus = comparison(name, thresholds.max_slice_regression)
            passed &= better
            detail += f"; {versus}"
        results.append(GateResult(f"slice.{name}", passed, accuracy, floor, detail))
    if evidence.ood is not None:
        results += ood_gates(evidence.ood, thresholds)
    return results


def ood_gates(ood: OodReport, thresholds: GateThresholds) -> list[GateResult]:
    detection, floor = ood.detection_rate, thresholds.min_ood_detection
    per_source = ", ".join(f"{source} {rate:.3f}" for source, rate in ood.detected.items())
    flagged = ood.flagged["test"]
    return [
        GateResult(
            "ood.auroc",
            ood.auroc >= thresholds.min_ood_auroc,
            ood.auroc,
            thresholds.min_ood_auroc,
            f"AUROC {ood.auroc:.4f} (test garments vs non-clothing) vs minimum {thresholds.min_ood_auroc:.4f}",
        ),
        GateResult(
            "ood.detection",
            detection >= floor,
            detection,
            floor,
            f"non-clothing flagged {detection:.4f} ({per_source}) vs minimum {floor:.4f}",
        ),
        GateResult(
            "ood.false_flags",
            flagged <= thresholds.max_ood_flagged,
            flagged,
            thresholds.max_ood_flagged,
            f"test garments flagged {flagged:.4f} vs maximum {thresholds.max_ood_flagged:.4f}",
        ),
    ]


def failed_gates(results: list[GateResult]) -> list[GateResult]:
    return [r for r in results if not r.passed]


def gate_tags(results: list[GateResult]) -> dict[str, str]:
    """Tags for the MLflow run and model version: `gate.<name>` = pass/fail, plus the numbers."""
    tags = {f"gate.{r.name}": "pass" if r.passed else "fail" for r in results}
    tags.update({f"gate.{r.name}.detail": r.detail for r in results})
    return tags


def as_records(results: list[GateResult]) -> list[dict]:
    return [asdict(r) for r in results]


@task(name="quality-gates", cache_policy=NO_CACHE)
def gates_task(
    run_id: str, evidence: Evidence, thresholds: GateThresholds, champion: ChampionScore | None = None
) -> list[GateResult]:
    """Record every verdict in MLflow and as a Prefect artifact; raise GateFailed (the run is marked
    `candidate_status=rejected`) when any gate fails, so nothing is registered."""
    results = check_gates(evidence, thresholds, champion)
    client = MlflowClient()
    for key, value in gate_tags(results).items():
        client.set_tag(run_id, key, value[:5000])
    for result in results:
        if result.value is not None and not result.name.startswith(("slice.", "ood.")):  # logged as their metrics
            client.log_metric(run_id, f"gate_{result.name}_value", result.value)
    client.log_dict(run_id, as_records(results), "evaluation/gates.json")  # type: ignore[arg-type]  # any JSON
    create_table_artifact(
        [{"gate": r.name, "verdict": "PASS" if r.passed else "FAIL", "numbers": r.detail} for r in results],
        key="quality-gates",
        description="Quality gates: " + ("REJECTED" if failed_gates(results) else "all passed"),
    )
    logger = get_run_logger()
    for result in results:
        logger.info("gate %s: %s (%s)", result.name, "PASS" if result.passed else "FAIL", result.detail)
    failures = failed_gates(results)
    if failures:
        client.set_tag(run_id, "candidate_status", "rejected")
        reasons = "; ".join(f"{r.name}: {r.detail}" for r in failures)
        model = client.get_run(run_id).data.tags.get("model_name", "clothes")
        emit(
            GATES_FAILED,
            model,
            f"{model}: candidate of run {run_id} rejected: {reasons}"[:3000],
            run_id=run_id,
            gates=[r.name for r in failures],
        )
        raise GateFailed("candidate rejected: " + reasons)
    return results
