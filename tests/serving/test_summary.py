"""Minute summaries: the parts of a window merge into the whole, survive their JSON, and read the drift
statistics within a bin of what the raw records give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from serving.log.records import INPUT_STATS
from serving.log.summary import BINS, HISTOGRAMS, TrafficSummary
from tasks.monitoring.drift import binned_ks, binned_psi, decile_psi

CLASSES = 10


def traffic(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict:
    probabilities = rng.dirichlet(np.ones(CLASSES) * 0.3, n)
    return {
        "class_ids": probabilities.argmax(axis=1),
        "columns": {
            **{key: np.clip(rng.beta(2 + shift, 5, n), 0, 1) for key in INPUT_STATS},
            "confidence": probabilities.max(axis=1),
        },
        "probabilities": probabilities,
        "in_distribution": rng.random(n) > 0.1,
    }


def summary_of(parts: list[dict], minute: int = 0) -> TrafficSummary:
    summary = TrafficSummary.empty("clothes", 3, CLASSES, minute)
    for part in parts:
        summary.add_predictions(**part)
    return summary


def test_the_summaries_of_the_parts_merge_into_the_summary_of_the_whole():
    rng = np.random.default_rng(0)
    parts = [traffic(rng, n) for n in (500, 1, 1200)]
    whole = summary_of(parts)
    whole.add_feedback("a" * 36, 3, 3, reviewed=True)
    whole.add_feedback("b" * 36, 3, 5)
    whole.add_feedback("c" * 32, None, 1)  # an id from before 0.5.0: its answer is unknown
    pieces = [summary_of([part], minute=60 * i) for i, part in enumerate(parts)]
    pieces[0].add_feedback("a" * 36, 3, 3, reviewed=True)
    pieces[2].add_feedback("b" * 36, 3, 5)
    pieces[1].add_feedback("c" * 32, None, 1)
    merged = pieces[0].merge(pieces[1]).merge(pieces[2])
    assert (merged.first, merged.last, merged.n) == (0, 120, 1701)
    np.testing.assert_array_equal(merged.class_counts, whole.class_counts)
    np.testing.assert_allclose(merged.confusion, whole.confusion)
    for key in HISTOGRAMS:
        np.testing.assert_array_equal(merged.histograms[key], whole.histograms[key])
        assert merged.sums[key] == np.float64(whole.sums[key]) or abs(merged.sums[key] - whole.sums[key]) < 1e-9
    assert (merged.ood_known, merged.ood_flagged) == (whole.ood_known, whole.ood_flagged)
    assert merged.feedback[3, 3] == 1 and merged.feedback[5, 3] == 1  # row: the true class; column: the answer
    assert (merged.n_feedback, merged.feedback_unmatched, merged.feedback_reviewed) == (3, 1, 1)
    assert sorted(merged.labels) == sorted(whole.labels)


def test_a_summary_survives_its_json():
    summary = summary_of([traffic(np.random.default_rng(1), 300)], minute=1_796_000_040)
    summary.add_feedback("d" * 36, 2, 4, reviewed=True)
    again = TrafficSummary.from_json(summary.to_json())
    assert again.to_json() == summary.to_json()
    assert len(summary.to_json()) < 40_000  # sparse histograms: a minute of one worker is a small file


def test_the_drift_statistics_from_a_summary_are_within_a_bin_of_the_raw_ones():
    rng = np.random.default_rng(2)
    reference = rng.beta(2, 5, 5000)
    for shift in (0.0, 0.3, 2.0):
        current = traffic(rng, 3000, shift)
        summary = summary_of([current])
        raw = stats.ks_2samp(reference, current["columns"]["mean"])
        statistic, pvalue = binned_ks(reference, summary, "mean")
        assert statistic <= raw.statistic + 1e-12  # read at bin edges: never more than the raw statistic
        assert raw.statistic - statistic < 0.005
        assert (pvalue < 0.01) == (raw.pvalue < 0.01)
        assert abs(decile_psi(reference, summary, "mean") - binned_psi(reference, current["columns"]["mean"])) < 0.01


def test_the_share_above_a_threshold_splits_its_bin():
    summary = summary_of([traffic(np.random.default_rng(3), 1)])
    summary.n = 4
    summary.histograms["confidence"] = np.zeros(BINS, np.int64)
    np.add.at(summary.histograms["confidence"], [100, 500, 500, 999], 1)  # 0.1, 0.5, 0.5 and 0.999
    assert summary.share_above("confidence", 0.5) == 0.75  # threshold at the bin's start: its whole bin above
    assert summary.share_above("confidence", 0.5005) == pytest.approx(0.5)  # half way through: half its count
    assert summary.share_above("confidence", 0.0) == 1.0
    assert summary.share_above("confidence", 1.0) == 0.0
