"""The shadow analysis on paired records with known answers: it promotes a candidate that agrees as the
test split said it would, aborts one that disagrees, fails, is slow or is worse on labelled requests,
waits while the evidence is thin and calls it inconclusive at the deadline; a capture store that does
not answer postpones an analysis and never fails the release."""

from __future__ import annotations

import numpy as np
import pytest

from serving.log.object_store import StoreError
from tasks.evaluation.estimate import EstimatorStats
from tasks.evaluation.metrics import wilson
from tasks.params import ModelRef, ReleaseParams
from tasks.release.shadow import watch
from tasks.release.shadow_analysis import Estimators, judge, shadow_evidence

PARAMS = ReleaseParams(strategy="shadow", min_images=300)


def records(
    count: int,
    disagree: float = 0.0,
    status: int = 200,
    seconds: float = 0.004,
    shadow_seconds: float = 0.006,
    flagged: float = 0.0,
    seed: int = 0,
) -> list[dict]:
    """`count` single-image requests; the shadow answers another class on `disagree` of them and flags
    `flagged` of them not clothing where production does not."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        production = int(rng.integers(10))
        shadow = (production + 1) % 10 if rng.random() < disagree else production
        line = {
            "type": "shadow",
            "time": 1000.0 + i,
            "model": "clothes",
            "version": 1,
            "shadow_version": 2,
            "ids": [f"id{i}"],
            "class_id": [production],
            "confidence": [0.9],
            "in_distribution": [True],
            "seconds": seconds,
            "shadow_status": status,
            "shadow_seconds": shadow_seconds,
        }
        if status == 200:
            line |= {
                "shadow_class_id": [shadow],
                "shadow_confidence": [0.8],
                "shadow_in_distribution": [bool(rng.random() >= flagged)],
            }
        lines.append(line)
    return lines


def verdict_of(lines: list[dict], offline: float | None = 0.06, final: bool = False):
    return judge(shadow_evidence(lines, 2), PARAMS, offline, final)


def test_wilson_interval_holds_the_proportion_and_narrows_with_trials():
    low, high = wilson(10, 100)
    assert low < 0.1 < high
    wide = high - low
    low, high = wilson(100, 1000)
    assert high - low < wide / 2


def test_a_candidate_that_disagrees_as_offline_is_promoted():
    verdict = verdict_of(records(600, disagree=0.06))
    assert verdict.outcome == "promote"
    assert verdict.evidence.compared == 600
    assert verdict.allowed_disagreement == pytest.approx(0.11)


def test_thin_evidence_waits_then_is_inconclusive_at_the_deadline():
    assert verdict_of(records(100, disagree=0.06)).outcome == "wait"
    final = verdict_of(records(100, disagree=0.06), final=True)
    assert final.outcome == "inconclusive"
    assert "100 of 300 images compared" in final.reasons[0]
    assert verdict_of([], final=True).outcome == "inconclusive"


def test_disagreement_far_above_the_test_splits_aborts_early():
    verdict = verdict_of(records(60, disagree=0.5))
    assert verdict.outcome == "abort"
    assert "disagrees with production" in verdict.reasons[0]


def test_the_absolute_bound_holds_whatever_the_test_split_said():
    verdict = verdict_of(records(600, disagree=0.3), offline=0.3)
    assert verdict.allowed_disagreement == PARAMS.max_disagreement
    assert verdict.outcome == "abort"


def test_inputs_either_model_flags_not_clothing_do_not_count_as_disagreement():
    lines = records(600, disagree=0.06)
    for line in lines[:200]:
        line["in_distribution"] = [False]
        line["shadow_class_id"] = [(line["class_id"][0] + 3) % 10]
    evidence = shadow_evidence(lines, 2)
    assert evidence.images == 600
    assert evidence.compared == 400


@pytest.mark.parametrize("status", [500, 0])
def test_a_failing_shadow_is_aborted(status):
    verdict = verdict_of(records(30, status=status))
    assert verdict.outcome == "abort"
    assert "failed 30 of 30" in verdict.reasons[0]


def test_a_slow_shadow_is_aborted_once_enough_is_compared():
    assert verdict_of(records(100, shadow_seconds=0.5)).outcome == "wait"
    verdict = verdict_of(records(600, shadow_seconds=0.5))
    assert verdict.outcome == "abort"
    assert "p99 latency" in verdict.reasons[0]


def test_a_shadow_flagging_many_more_inputs_is_aborted():
    verdict = verdict_of(records(600, flagged=0.2))
    assert verdict.outcome == "abort"
    assert "not clothing" in verdict.reasons[0]
    low, high = verdict.evidence.ood_difference_interval
    assert 0.05 < low < verdict.evidence.ood_share_difference < high


def test_a_not_clothing_difference_within_its_noise_of_the_bound_aborts_nothing():
    """Two seeds of one recipe flag a few photos differently: 6 points more on 600 images is within the
    interval's reach of the 5 allowed, so it is not evidence of a worse model."""
    verdict = verdict_of(records(600, flagged=0.06, seed=3))
    assert 0.05 < verdict.evidence.ood_share_difference < 0.075
    assert verdict.evidence.ood_difference_interval[0] < 0.05
    assert verdict.outcome == "promote", verdict.reasons


def test_labelled_mirrored_requests_show_a_worse_candidate():
    lines = records(600, disagree=0.08, seed=3)
    feedback = []
    for i, line in enumerate(lines):  # the truth is production's answer: each disagreement is a loss
        feedback.append(
            {
                "type": "feedback",
                "time": 2000.0 + i,
                "model": "clothes",
                "version": 1,
                "id": line["ids"][0],
                "true_class_id": line["class_id"][0],
            }
        )
    verdict = verdict_of(lines + feedback, offline=0.2)
    assert verdict.evidence.labelled == 600
    assert verdict.evidence.paired is not None
    assert verdict.evidence.paired.won == 0
    assert verdict.outcome == "abort"
    assert "worse on labelled live requests" in verdict.reasons[0]


def test_records_of_another_candidate_are_not_counted():
    lines = records(600, disagree=0.06)
    for line in lines:
        line["shadow_version"] = 3
    assert shadow_evidence(lines, 2).requests == 0


def test_each_models_estimated_accuracy_is_reported_beside_the_other_and_decides_nothing():
    lines = records(400, disagree=0.02)
    production = EstimatorStats(validation_accuracy=0.9, atc=0.85, test_accuracy=0.9)
    shadow = EstimatorStats(validation_accuracy=0.9, atc=0.75, test_accuracy=0.9)
    evidence = shadow_evidence(lines, 2, Estimators(production, shadow))
    assert evidence.estimated_production == 1.0  # every production answer at 0.9 is above its 0.85
    assert evidence.estimated_shadow == 1.0
    evidence = shadow_evidence(lines, 2, Estimators(production, production))
    assert evidence.estimated_shadow == 0.0  # the shadow's 0.8 is below 0.85
    assert evidence.metrics()["shadow.estimated_accuracy"] == 0.0
    assert evidence.metrics()["shadow.estimated_accuracy_production"] == 1.0
    assert judge(evidence, PARAMS, 0.06, False).outcome == verdict_of(lines).outcome == "promote"
    rows = {row["check"]: row["value"] for row in judge(evidence, PARAMS, 0.06, False).table()}
    assert rows["estimated accuracy (no labels)"] == "candidate 0.0000, production 1.0000"

    unknown = shadow_evidence(lines, 2)  # runs from before the estimate
    assert "shadow.estimated_accuracy" not in unknown.metrics()
    rows = {row["check"]: row["value"] for row in judge(unknown, PARAMS, 0.06, False).table()}
    assert rows["estimated accuracy (no labels)"] == "candidate n/a, production n/a"


class FlakyStore:
    """The records as the release reads them, with the capture store failing the first `failures` reads."""

    def __init__(self, lines: list[dict], failures: int) -> None:
        self.lines, self.failures, self.reads = lines, failures, 0

    def read(self) -> list[dict]:
        self.reads += 1
        if self.reads <= self.failures:
            raise StoreError("clothes: list_objects_v2 failed: could not connect")
        return self.lines


def test_a_store_that_does_not_answer_postpones_the_analysis_and_never_fails_the_release():
    said: list[str] = []
    params = PARAMS.model_copy(update={"interval_seconds": 0.01})
    traffic = FlakyStore(records(400, disagree=0.02), failures=2)
    verdict = watch(ModelRef("clothes", 2), params, 0.06, traffic, said.append, Estimators())
    assert verdict.outcome == "promote"
    assert traffic.reads == 3
    assert sum("capture store did not answer" in line for line in said) == 2

    # Still failing at the deadline: what was read last is judged (here nothing: inconclusive).
    params = PARAMS.model_copy(update={"interval_seconds": 0.01, "deadline_minutes": 0.001})
    verdict = watch(ModelRef("clothes", 2), params, 0.06, FlakyStore([], failures=10**6), said.append, Estimators())
    assert verdict.outcome == "inconclusive"
    assert "judging what was read" in said[-2]
