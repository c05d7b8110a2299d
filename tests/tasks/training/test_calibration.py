"""Temperature scaling: the fit finds the temperature that made the probabilities, the error it exists
to reduce goes down, and folding it into the last layer keeps every answer's class."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from serving.preprocessing import to_model_input
from tasks.training.calibration import calibrate, expected_calibration_error, fit_temperature, logits_of


def drawn(temperature: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): calibrated at that temperature."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 10))
    probabilities = softmax(logits / temperature, axis=1)
    labels = np.array([rng.choice(10, p=p) for p in probabilities])
    return logits, labels


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.5])
def test_the_fit_finds_the_temperature_the_labels_were_drawn_with(temperature):
    logits, labels = drawn(temperature)
    assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.05)


def test_calibration_lowers_the_expected_calibration_error_of_an_overconfident_model():
    logits, labels = drawn(2.0)
    before = expected_calibration_error(softmax(logits, axis=1), labels)
    after = expected_calibration_error(softmax(logits / fit_temperature(logits, labels), axis=1), labels)
    assert before > 0.1
    assert after < 0.02


def test_expected_calibration_error_is_zero_when_confidence_matches_accuracy():
    probabilities = np.tile([[0.75, 0.25]], (4, 1))
    assert expected_calibration_error(probabilities, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(probabilities, np.array([1, 1, 1, 1])) == pytest.approx(0.75)


def test_folding_the_temperature_into_the_last_layer_divides_the_logits_and_keeps_the_classes(
    trained_model, fashion_mnist
):
    import keras

    copy = keras.models.clone_model(trained_model)
    copy.set_weights(trained_model.get_weights())
    pixels = fashion_mnist.x_test[:300]
    logits = logits_of(copy, pixels)
    calibrate(copy, 1.7)
    served = copy.predict(to_model_input(pixels), verbose=0)
    np.testing.assert_allclose(served, softmax(logits / 1.7, axis=1), atol=1e-4)
    assert (served.argmax(axis=1) == logits.argmax(axis=1)).all()
