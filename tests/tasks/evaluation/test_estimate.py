"""The label-free accuracy estimate: its pieces on numbers worked by hand, then a real model's estimate
against the truth on two shifts of known accuracy (within the error `make bench-estimate` measured)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.preprocessing import decode_image
from tasks.evaluation.estimate import (
    DEFAULT,
    Answers,
    EstimatorStats,
    atc_threshold,
    estimate,
    estimated_recall,
    expected_confusion,
    fit_estimators,
    fit_for_run,
)
from tasks.evaluation.metrics import predict_probabilities
from tasks.evaluation.shifts import build_shifts, kind, true_accuracy
from tasks.evaluation.slices import slice_files
from tasks.params import TrainParams

SLICE_ERROR = 0.03  # the default's worst error on the slices in `make bench-estimate` (0.014), plus sampling


def test_the_atc_threshold_leaves_as_many_answers_above_it_as_were_right():
    confidence = np.linspace(0.3, 1.0, 1000)
    threshold = atc_threshold(confidence, 0.8)
    assert (confidence > threshold).mean() == pytest.approx(0.8, abs=0.002)


def test_the_expected_confusion_matrix_sums_each_answers_probabilities_under_its_class():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    matrix = expected_confusion(probabilities, np.array([0, 0, 2]))
    np.testing.assert_allclose(matrix[:, 0], [1.3, 0.5, 0.2])
    np.testing.assert_allclose(matrix[:, 2], [0.1, 0.1, 0.8])
    assert matrix.sum() == pytest.approx(3)
    recall = estimated_recall(probabilities, np.array([0, 0, 2]))
    assert recall[0] == pytest.approx(1.3 / 1.4)
    assert recall[1] == pytest.approx(0.0)  # class 1 expected 0.6 times, never answered


def test_answers_from_the_log_keep_the_probabilities_only_when_every_record_has_them():
    with_them = [
        {"class_id": 0, "confidence": 0.9, "probabilities": [0.9, 0.1]},
        {"class_id": 1, "confidence": 0.6, "probabilities": [0.4, 0.6]},
    ]
    answers = Answers.logged(with_them)  # type: ignore[arg-type]
    assert answers.probabilities is not None and answers.probabilities.shape == (2, 2)
    older = [with_them[0], {"class_id": 1, "confidence": 0.6}]
    assert Answers.logged(older).probabilities is None  # type: ignore[arg-type]
    stats = EstimatorStats(validation_accuracy=0.8, atc=0.7, test_accuracy=0.8)
    found = estimate(stats, Answers.logged(older))  # type: ignore[arg-type]
    assert found is not None
    assert found.estimator == DEFAULT
    assert found.accuracy == 0.5
    assert found.recall == {}
    assert found.low < 0.5 < found.high


def test_statistics_survive_their_json():
    validation = Answers.of(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]]))
    stats = fit_estimators(validation, np.array([0, 1, 1, 0]), test_accuracy=0.75)
    assert stats.validation_accuracy == 0.75
    assert EstimatorStats.from_dict(stats.as_dict()) == stats


@pytest.fixture(scope="module")
def shifted(fashion_mnist):
    """The rotation and the noise slices as the server reads their files (the benchmark's 1,000 each)."""
    x, y = fashion_mnist.x_test, fashion_mnist.y_test
    slices = {}
    for name in ("rotation_shift", "noise"):
        files, labels = slice_files(name, x, y, 1000, seed=0)
        slices[f"slice_{name}"] = (np.stack([decode_image(data)[0] for data in files]), labels)
    return slices


def test_the_estimate_follows_the_truth_on_the_rotation_and_the_noise_slices(trained_model, fashion_mnist, shifted):
    params = TrainParams(validation_fraction=0.05)  # the fixture model's split
    stats = fit_for_run(
        trained_model, fashion_mnist, params, predict_probabilities(trained_model, fashion_mnist.x_test)
    )
    for name, (pixels, labels) in shifted.items():
        answers = Answers.of(predict_probabilities(trained_model, pixels))
        truth = true_accuracy(answers.predicted, labels)
        found = estimate(stats, answers)
        assert found is not None
        assert abs(found.accuracy - truth) <= SLICE_ERROR, (name, found.accuracy, truth)
        assert kind(name) == "slice"


def test_the_benchmark_has_at_least_thirty_shifts_of_every_kind_asked_for(fashion_mnist):
    shifts = build_shifts(fashion_mnist.x_test[:600], fashion_mnist.y_test[:600], size=120, seed=1)
    kinds = {kind(name) for name in shifts}
    assert len(shifts) >= 30
    assert {"none", "slice", "rotation", "translation", "noise", "blur", "contrast", "prior", "not_clothing"} <= kinds
    pixels, labels = shifts["not_clothing_25pct"]
    assert (labels == -1).mean() == pytest.approx(0.25, abs=0.01)
    assert pixels.dtype == np.uint8 and pixels.shape[1:] == (28, 28)
