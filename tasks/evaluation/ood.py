"""The out-of-distribution flag as a pipeline stage: fit its statistics on the training split, calibrate
its threshold on held-out garments (the validation split, plain and as photos), judge it on this run's
test split and on inputs that are not clothing (`tasks.evaluation.ood_sources`), and store everything
on the run (`ood/detector.json`), where the export finds it: the statistics go into the exported
model's graph (`scoring_model`), the quantiles and threshold into `ood.json` (`serving.ood`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from serving.ood import EVIDENCE, EVIDENCES, OodDetector
from serving.preprocessing import decode_image, to_model_input
from tasks.data.dataset import Dataset, stratified_split
from tasks.evaluation.ood_sources import build_ood_slices
from tasks.evaluation.slices import PHOTO_SLICES, Slices, slice_files
from tasks.params import TrainParams

OOD_ARTIFACT = "ood/detector.json"
QUANTILES = 1001  # each evidence's reference distribution, at 0.1% resolution
FIT_IMAGES = 20_000  # class means and covariances settle long before the whole training split
CALIBRATION_PHOTOS = 500  # validation garments per photo slice the threshold is calibrated on
MAX_FLAGGED = 0.05  # of held-out garments
MAX_FLAGGED_PHOTOS = 0.10  # of each photo slice


def texture_moments(model):  # -> KerasTensor (N, 2 x channels of every pooling layer)
    """Each pooling layer's per-channel mean and standard deviation, reduced in the graph. The deviation
    from the mean of squares: `keras.ops.std` converts to LiteRT ops that cost a batch of 256 8% more
    time; this costs nothing measurable (benchmarks/bench_serving.py)."""
    import keras

    pooling = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    moments = []
    for pool in (layer.output for layer in model.layers if isinstance(layer, pooling)):
        mean, square = keras.ops.mean(pool, (1, 2)), keras.ops.mean(keras.ops.square(pool), (1, 2))
        moments += [mean, keras.ops.sqrt(keras.ops.maximum(square - mean * mean, 0.0))]
    return keras.layers.Concatenate(name="texture")(moments)


def pixel_statistics(inputs):  # -> KerasTensor (N, 10)
    """Ten statistics of the input image itself, which no training run changes: mean and spread of
    the intensity, the share of "ink" (above a fifth of the image's peak), the mean absolute step
    between neighbouring pixels across and down (absolute, and per unit of intensity: thin strokes
    step often), the spread of the column and row profiles, and the edge: the outermost pixels' mean
    per unit of the peak. Garments are filled, centred shapes with a margin; text, stripes and noise
    are not, and scenes and many objects run off the frame, whatever the network learned (docs/ood.md:
    what the learned evidences catch swings from one training seed to the next).

    Whole-image averages are products with a constant column and the ink a clipped ramp: with LiteRT's
    multi-axis means and its bool-to-float cast the first nine numbers took a batch of 256 two thirds of
    the classifier's own time (2.4 ms vs 3.7 ms); this way 0.7-1.0 ms (docs/benchmarks.md)."""
    import keras

    rows, columns = int(inputs.shape[1]), int(inputs.shape[2])
    size = rows * columns

    def average(n: int) -> np.ndarray:
        return np.full((n, 1), 1.0 / n, dtype=np.float32)

    def mean_and_spread(values, n: int):
        mean = keras.ops.matmul(values, average(n))
        square = keras.ops.matmul(values * values, average(n))
        return mean, keras.ops.sqrt(keras.ops.maximum(square - mean * mean, 0.0))

    flat = keras.ops.reshape(inputs, (-1, size))
    flat = flat - keras.ops.min(flat, axis=1, keepdims=True)
    peak = keras.ops.maximum(keras.ops.max(flat, axis=1, keepdims=True), 1e-6)
    mean, deviation = mean_and_spread(flat, size)
    # Half a grey level above a fifth of the peak: a 0-255 image's pixels lie at least a tenth of a grey
    # level (1/2550) away from it, where the ramp (steeper than that) already is 0 or 1.
    ink = keras.ops.matmul(keras.ops.minimum(keras.ops.relu((flat - 0.2 * peak - 0.5 / 255) * 2.55e6), 1.0),
                           average(size))  # fmt: skip
    image = keras.ops.reshape(flat, (-1, rows, columns))
    steps = rows * (columns - 1), (rows - 1) * columns
    across = keras.ops.abs(image[:, :, 1:] - image[:, :, :-1])
    down = keras.ops.abs(image[:, 1:, :] - image[:, :-1, :])
    across = keras.ops.matmul(keras.ops.reshape(across, (-1, steps[0])), average(steps[0]))
    down = keras.ops.matmul(keras.ops.reshape(down, (-1, steps[1])), average(steps[1]))
    # One axis each: as a product with a (784, 56) profile matrix they cost a single image 15 us more,
    # the matrix being 175 KB of a 430 KB model (benchmarks/bench_serving.py).
    column_spread = mean_and_spread(keras.ops.mean(image, axis=1), columns)[1]
    row_spread = mean_and_spread(keras.ops.mean(image, axis=2), rows)[1]
    border = np.ones((rows, columns), dtype=bool)
    border[1:-1, 1:-1] = False
    edge = keras.ops.matmul(flat, (border.reshape(size, 1) / border.sum()).astype(np.float32)) / peak
    values = [mean, deviation, ink, across, down, across / (mean + 1e-3), down / (mean + 1e-3), column_spread,
              row_spread, edge]  # fmt: skip
    return keras.layers.Concatenate(name="pixels")(values)


def feature_model(model):  # -> keras.Model
    """What the statistics are fitted on: the last layer's input, the texture moments, the pixel statistics."""
    import keras

    outputs = {"features": model.layers[-1].input, "texture": texture_moments(model),
               "pixels": pixel_statistics(model.inputs[0])}  # fmt: skip
    return keras.Model(model.inputs, outputs)


def nearest_class_distance(x, means: np.ndarray, factor: np.ndarray):  # -> KerasTensor (N,)
    """Squared Mahalanobis distance to the nearest class mean, with the precision factored as L L^T:
    min_c |(x - mu_c) L|^2 = |z|^2 - 2 z . c + |c|^2 with z = (x - m) L, c = (mu_c - m) L, m the mean of
    the class means. Two small matrix products: the broadcast difference (N, classes, D) cost a batch of
    256 a tenth more time; centring on m keeps float32 from cancelling."""
    import keras

    centre = means.mean(axis=0)
    z = keras.ops.matmul(x - centre.astype(np.float32), factor.astype(np.float32))
    classes = (means - centre) @ factor
    cross = keras.ops.matmul(z, (-2 * classes.T).astype(np.float32)) + (classes**2).sum(axis=1).astype(np.float32)
    return keras.ops.min(cross, axis=1) + keras.ops.sum(keras.ops.square(z), axis=1)


def scoring_model(model, stats: dict):  # -> keras.Model
    """The classifier with the extra output `serving.ood.EVIDENCE` (N, 4): energy, feature, texture and
    pixel distance, computed in the graph from the fitted statistics, so the server receives four
    numbers per image."""
    import keras

    def array(key: str) -> np.ndarray:
        return np.asarray(stats[key], dtype=np.float64)

    features = model.layers[-1].input
    weights, bias = (array(key).astype(np.float32) for key in ("logit_weights", "logit_bias"))
    logits = keras.ops.matmul(features, weights) + bias
    evidence = keras.ops.stack(
        [
            -keras.ops.logsumexp(logits, axis=1),
            nearest_class_distance(features, array("feature_means"), array("feature_factor")),
            nearest_class_distance(texture_moments(model), array("texture_means"), array("texture_factor")),
            nearest_class_distance(pixel_statistics(model.inputs[0]), array("pixel_means"), array("pixel_factor")),
        ],
        axis=1,
    )
    return keras.Model(model.inputs, {"probabilities": model.outputs[0], EVIDENCE: evidence}, name="scoring")


def model_outputs(scoring, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Every output for (N, 28, 28) 0-255 pixels."""
    outputs = scoring.predict(to_model_input(pixels), batch_size=2048, verbose=0)
    return {key: np.asarray(value) for key, value in outputs.items()}


def compact(values: np.ndarray) -> list:
    """Six significant digits: the statistics' JSON at a third of its full-precision size."""
    return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[float])(np.asarray(values, dtype=np.float64)).tolist()


def class_statistics(values: np.ndarray, labels: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the Cholesky factor of the shared precision (Ledoit-Wolf shrinkage: some
    features are nearly constant)."""
    means = np.stack([values[labels == c].mean(axis=0) for c in range(classes)])
    precision = LedoitWolf().fit(values - means[labels]).precision_
    return means, np.linalg.cholesky(precision)


def calibration_photos(dataset: Dataset, indices: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Validation garments as each photo slice sends them, read back through the server's conversion."""
    x, y = dataset.x_train[indices], dataset.y_train[indices]
    return {
        name: np.stack([decode_image(data)[0] for data in slice_files(name, x, y, CALIBRATION_PHOTOS, seed)[0]])
        for name in PHOTO_SLICES
    }


def calibrated_threshold(garments: np.ndarray, photos: dict[str, np.ndarray]) -> float:
    """The lowest threshold that flags at most MAX_FLAGGED of the garments and MAX_FLAGGED_PHOTOS of
    each photo slice (a score above it is flagged)."""
    return float(
        max(np.quantile(garments, 1 - MAX_FLAGGED), *(np.quantile(s, 1 - MAX_FLAGGED_PHOTOS) for s in photos.values()))
    )


def fit_detector(model, dataset: Dataset, params: TrainParams) -> dict:
    """Everything the flag needs, from the training run's own split: the statistics the exported graph
    computes the evidence with (class means and precision factors on part of its training images), and
    what `serving.ood.OodDetector` reads (the evidence's quantiles and the threshold, on its validation
    images), so the test split stays unseen until the flag is judged."""
    train_idx, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    fit_idx = np.random.default_rng(params.seed).permutation(train_idx)[:FIT_IMAGES]
    fitted = {k: v.astype(np.float64) for k, v in model_outputs(feature_model(model), dataset.x_train[fit_idx]).items()}
    labels, classes = dataset.y_train[fit_idx], len(dataset.class_names)
    feature_means, feature_factor = class_statistics(fitted["features"], labels, classes)
    texture_means, texture_factor = class_statistics(fitted["texture"], labels, classes)
    pixel_means, pixel_factor = class_statistics(fitted["pixels"], labels, classes)
    weights, bias = model.layers[-1].get_weights()
    stats: dict = {
        "method": "rank among held-out garments of the summed z-scores (Stouffer) of each evidence's rank among "
        "them: energy, feature, texture and pixel Mahalanobis distances",
        "evidences": list(EVIDENCES),
        "logit_weights": compact(weights),
        "logit_bias": compact(bias),
        "feature_means": compact(feature_means),
        "feature_factor": compact(feature_factor),
        "texture_means": compact(texture_means),
        "texture_factor": compact(texture_factor),
        "pixel_means": compact(pixel_means),
        "pixel_factor": compact(pixel_factor),
    }
    scoring = scoring_model(model, stats)
    held_out = model_outputs(scoring, dataset.x_train[val_idx])[EVIDENCE]
    stats["reference_quantiles"] = compact(np.quantile(held_out, np.linspace(0, 1, QUANTILES), axis=0).T)
    summed = OodDetector.from_dict({**stats, "threshold": 1.0}).stouffer(held_out)
    stats["combined_quantiles"] = compact(np.quantile(summed, np.linspace(0, 1, QUANTILES)))
    detector = OodDetector.from_dict({**stats, "threshold": 1.0})
    photos = calibration_photos(dataset, val_idx, params.seed)
    photo_scores = {name: detector.scores(model_outputs(scoring, p)[EVIDENCE]) for name, p in photos.items()}
    stats["threshold"] = calibrated_threshold(detector.scores(held_out), photo_scores)
    return stats


def shipped(stats: dict) -> dict:
    """What `ood.json` beside the exported model holds: the rest is baked into its graph."""
    keys = ("method", "evidences", "reference_quantiles", "combined_quantiles", "threshold")
    return {key: stats[key] for key in keys if key in stats}


@dataclass(frozen=True)
class OodReport:
    """How the flag does on this run's test split, photo slices and non-clothing sources."""

    flagged: dict[str, float]  # garments flagged: "test" and each photo slice
    detected: dict[str, float]  # non-clothing inputs flagged, per source
    auroc: float  # test garments against all non-clothing inputs

    @property
    def detection_rate(self) -> float:
        """Non-clothing inputs flagged, averaged over the sources (each weighs the same)."""
        return float(np.mean(list(self.detected.values())))

    def metrics(self) -> dict[str, float]:
        return {
            **{f"ood.{name}.flagged_rate": rate for name, rate in self.flagged.items()},
            **{f"ood.{source}.detection_rate": rate for source, rate in self.detected.items()},
            "ood.detection_rate": self.detection_rate,
            "ood.auroc": self.auroc,
        }


def judge_detector(
    stats: dict, model, test_pixels: np.ndarray, slices: Slices, outliers: dict[str, np.ndarray]
) -> OodReport:
    detector, scoring = OodDetector.from_dict(stats), scoring_model(model, stats)

    def scores(pixels: np.ndarray) -> np.ndarray:
        return detector.scores(model_outputs(scoring, pixels)[EVIDENCE])

    test = scores(test_pixels)
    flagged = {"test": float((test > detector.threshold).mean())}
    for name in (name for name in PHOTO_SLICES if name in slices):
        flagged[name] = float((scores(slices[name][0]) > detector.threshold).mean())
    outlier_scores = {source: scores(pixels) for source, pixels in outliers.items()}
    detected = {source: float((s > detector.threshold).mean()) for source, s in outlier_scores.items()}
    everything = np.concatenate(list(outlier_scores.values()))
    truth = np.r_[np.zeros(len(test)), np.ones(len(everything))]
    return OodReport(flagged, detected, float(roc_auc_score(truth, np.r_[test, everything])))


@task(name="fit-ood-detector", cache_policy=NO_CACHE)
def ood_task(model, dataset: Dataset, params: TrainParams, slices: Slices, size: int, run_id: str) -> OodReport:
    """Fit and calibrate on the training split, judge on the test split and `size` inputs per
    non-clothing source; the statistics and the figures go to the run."""
    stats = fit_detector(model, dataset, params)
    report = judge_detector(stats, model, dataset.x_test, slices, build_ood_slices(size, params.seed))
    client = MlflowClient()
    client.log_dict(run_id, stats, OOD_ARTIFACT)
    for key, value in report.metrics().items():
        client.log_metric(run_id, key, value)
    get_run_logger().info(
        "out-of-distribution flag (threshold %.3f): AUROC %.3f; flagged garments %s; detected %s",
        stats["threshold"], report.auroc,
        ", ".join(f"{k} {v:.3f}" for k, v in report.flagged.items()),
        ", ".join(f"{k} {v:.3f}" for k, v in report.detected.items()),
    )  # fmt: skip
    return report
