"""Quality gates a candidate must pass before it may enter the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from tasks.evaluation.metrics import Evaluation
from tasks.params import GateThresholds, ModelRef


@dataclass(frozen=True)
class ChampionScore:
    """The champion re-scored on this run's test split and engineered hold-out."""

    ref: ModelRef
    accuracy: float
    slice_accuracy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


class GateFailed(RuntimeError):
    """A candidate failed at least one gate; the message lists every failing gate with its numbers."""


def check_gates(
    candidate: Evaluation,
    thresholds: GateThresholds,
    champion_accuracy: float | None = None,
    champion_label: str = "champion",
    slice_accuracy: dict[str, float] | None = None,
    champion_slices: dict[str, float] | None = None,
) -> list[GateResult]:
    """Every gate is evaluated (no short-circuit) so a reviewer sees all verdicts at once: the plain
    ones, then one per slice of the engineered hold-out (its floor and no regression vs the champion)."""
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
    if champion_accuracy is None:
        results.append(GateResult("no_regression", True, None, None, "no champion yet: nothing to regress from"))
    else:
        floor = champion_accuracy - thresholds.max_regression
        results.append(
            GateResult(
                "no_regression",
                candidate.accuracy >= floor,
                candidate.accuracy - champion_accuracy,
                -thresholds.max_regression,
                f"accuracy {candidate.accuracy:.4f} vs {champion_label} {champion_accuracy:.4f} on the same "
                f"test set (tolerance {thresholds.max_regression:.4f})",
            )
        )
    for name, accuracy in (slice_accuracy or {}).items():
        results.append(slice_gate(name, accuracy, thresholds, (champion_slices or {}).get(name), champion_label))
    return results


def slice_gate(
    name: str, accuracy: float, thresholds: GateThresholds, champion: float | None, champion_label: str
) -> GateResult:
    floor = thresholds.min_slice_accuracy.get(name)
    passed = floor is None or accuracy >= floor
    detail = f"{name} accuracy {accuracy:.4f} vs minimum " + ("none" if floor is None else f"{floor:.4f}")
    if champion is not None:
        passed &= accuracy >= champion - thresholds.max_slice_regression
        detail += f"; {champion_label} {champion:.4f} (tolerance {thresholds.max_slice_regression:.4f})"
    return GateResult(f"slice.{name}", passed, accuracy, floor, detail)


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
    run_id: str,
    evaluation: Evaluation,
    thresholds: GateThresholds,
    champion: ChampionScore | None = None,
    slice_accuracy: dict[str, float] | None = None,
) -> list[GateResult]:
    """Record every verdict in MLflow and as a Prefect artifact; raise GateFailed (the run is marked
    `candidate_status=rejected`) when any gate fails, so nothing is registered."""
    champion_label = f"champion v{champion.ref.version}" if champion else "champion"
    results = check_gates(
        evaluation, thresholds, champion.accuracy if champion else None, champion_label, slice_accuracy,
        champion.slice_accuracy if champion else None,
    )  # fmt: skip
    client = MlflowClient()
    for key, value in gate_tags(results).items():
        client.set_tag(run_id, key, value[:5000])
    for result in results:
        if result.value is not None and not result.name.startswith("slice."):  # those are slice.<name>.accuracy
            client.log_metric(run_id, f"gate_{result.name}_value", result.value)
    client.log_dict(run_id, as_records(results), "evaluation/gates.json")  # type: ignore[arg-type]  # any JSON
    create_table_artifact(
        [{"gate": r.name, "verdict": "PASS" if r.passed else "FAIL", "numbers": r.detail} for r in results],
        key="quality-gates", description="Quality gates: " + ("REJECTED" if failed_gates(results) else "all passed"),
    )  # fmt: skip
    logger = get_run_logger()
    for result in results:
        logger.info("gate %s: %s (%s)", result.name, "PASS" if result.passed else "FAIL", result.detail)
    failures = failed_gates(results)
    if failures:
        client.set_tag(run_id, "candidate_status", "rejected")
        raise GateFailed("candidate rejected: " + "; ".join(f"{r.name}: {r.detail}" for r in failures))
    return results
