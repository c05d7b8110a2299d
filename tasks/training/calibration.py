"""Temperature scaling (Guo et al. 2017): one number T fitted on the validation split so the served
probabilities mean what they say (of the answers given with confidence 0.8, about 80% are right), which
the label-free accuracy estimate (`tasks.evaluation.estimate`) relies on.

T is folded into the classifier's last layer (softmax(z / T) = softmax((W / T) x + b / T)), so the
model that is evaluated, exported and served answers calibrated probabilities with no extra op and the
same top class. Written here rather than taken from `netcal`: the fit is one bounded scalar minimisation
(scipy), and netcal would bring PyTorch into the pipeline's environment for it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from serving.preprocessing import to_model_input
from tasks.data.dataset import Dataset, stratified_split
from tasks.params import TrainParams

ECE_BINS = 15  # Guo et al.'s


def logits_of(model, pixels: np.ndarray) -> np.ndarray:
    """(N, 28, 28) 0-255 pixels -> (N, classes) float64 logits of the last layer."""
    import keras

    last = model.layers[-1]
    features = keras.Model(model.inputs, last.input).predict(to_model_input(pixels), batch_size=2048, verbose=0)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in last.get_weights())
    return np.asarray(features, dtype=np.float64) @ kernel + bias


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    return float(-log_softmax(logits / temperature, axis=1)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the negative log-likelihood of `labels`."""
    fit = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(fit.x))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """The gap between confidence and accuracy, averaged over equal-width confidence bins weighted by
    their share of the answers (top-1)."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, correct, bins) - np.bincount(which, confidence, bins))
    return float(gap.sum() / max(total.sum(), 1))


def calibrate(model, temperature: float) -> None:
    """Divide the last layer's weights by T in place: the model now answers softmax(logits / T)."""
    last = model.layers[-1]
    last.set_weights([np.asarray(w) / np.float32(temperature) for w in last.get_weights()])


@dataclass(frozen=True)
class Calibration:
    temperature: float
    before: dict[str, float]  # ece and nll on the validation and test splits, uncalibrated
    after: dict[str, float]

    def metrics(self) -> dict[str, float]:
        return {
            "calibration.temperature": self.temperature,
            **{f"calibration.{key}_before": value for key, value in self.before.items()},
            **{f"calibration.{key}_after": value for key, value in self.after.items()},
        }


def measure(logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], temperature: float) -> dict[str, float]:
    figures = {}
    for split, values in logits.items():
        figures[f"{split}_ece"] = expected_calibration_error(softmax(values / temperature, axis=1), labels[split])
        figures[f"{split}_nll"] = negative_log_likelihood(values, labels[split], temperature)
    return figures


def fit_calibration(model, dataset: Dataset, params: TrainParams) -> Calibration:
    """T from the validation split (the test split only measures it), and the model calibrated with it."""
    _train, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    logits = {"val": logits_of(model, dataset.x_train[val_idx]), "test": logits_of(model, dataset.x_test)}
    labels = {"val": dataset.y_train[val_idx], "test": dataset.y_test}
    temperature = fit_temperature(logits["val"], labels["val"])
    calibration = Calibration(temperature, measure(logits, labels, 1.0), measure(logits, labels, temperature))
    calibrate(model, temperature)
    return calibration


@task(name="calibrate", cache_policy=NO_CACHE)
def calibrate_task(model, dataset: Dataset, params: TrainParams, run_id: str) -> Calibration:
    """Temperature scaling on the training run's validation split; the model is calibrated in place
    before anything evaluates, exports or serves it."""
    calibration = fit_calibration(model, dataset, params)
    client = MlflowClient()
    for key, value in calibration.metrics().items():
        client.log_metric(run_id, key, value)
    get_run_logger().info(
        "calibrated: temperature %.3f; test ECE %.4f -> %.4f, NLL %.4f -> %.4f",
        calibration.temperature,
        calibration.before["test_ece"],
        calibration.after["test_ece"],
        calibration.before["test_nll"],
        calibration.after["test_nll"],
    )
    return calibration
