"""The out-of-distribution flag as a pipeline stage: fit its statistics on the training split, calibrate
its threshold on held-out garments (the validation split, plain and as photos), judge it on this run's
test split and on inputs that are not clothing (`tasks.evaluation.ood_sources`), and store everything
on the run (`ood/detector.json`), where the export finds it: the statistics and the garments'
quantiles go into the exported model's graph (`scoring_model`), the threshold into `ood.json`
(`serving.models.ood`)."""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from serving.models.ood import EVIDENCE, SCORE
from serving.models.ood import FORMAT as OOD_FORMAT
from serving.preprocessing import decode_image, to_model_input
from tasks.data.dataset import Dataset, stratified_split
from tasks.evaluation.ood_sources import build_ood_slices
from tasks.evaluation.slices import PHOTO_SLICES, Slices, slice_files
from tasks.params import TrainParams

OOD_ARTIFACT = "ood/detector.json"
QUANTILES = 1001  # the ranks the first exports' numpy ranking resolved (`serving.models.ood.OodDetector`)
Z_KNOTS = 33  # knots of each evidence's rank as a z-score: steps of 0.2 in z
# Knots of the final rank: every 2% up to 90%, every 0.1% above, where the threshold lies.
SCORE_LEVELS = np.r_[np.linspace(0, 0.9, 46)[:-1], np.linspace(0.9, 1, 101)]
EVIDENCE_NAMES = ("max_logit", "feature_distance", "texture_distance")  # what `evidence` computes
FIT_IMAGES = 20_000  # class means and covariances settle long before the whole training split
CALIBRATION_PHOTOS = 500  # validation garments per photo slice the threshold is calibrated on
MAX_FLAGGED = 0.05  # of held-out garments
MAX_FLAGGED_PHOTOS = 0.10  # of each photo slice


def texture_moments(model):  # -> KerasTensor (N, 4 x the first pooling layer's channels + the last's)
    """Where in the frame the first pooling layer responds (its per-channel mean over each quarter of
    the image, an odd last row or column left out) and how strongly the last one does (its per-channel
    mean). The quarters catch scene crops, which fill the frame where garments leave a margin, as the
    raw pixels' edge did, at a fraction of the cost of any op on the 28x28 input; per-channel mean
    squares or deviations detected no more (docs/ood.md)."""
    import keras

    pooling = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
    pools = [layer.output for layer in model.layers if isinstance(layer, pooling)]
    first, last = pools[0], pools[-1]
    half = (int(first.shape[1]) // 2, int(first.shape[2]) // 2)
    quarters = keras.ops.average_pool(first, half, strides=half)  # (N, 2, 2, channels)
    whole = keras.ops.average_pool(last, tuple(int(n) for n in last.shape[1:3]))  # the mean, as a pooling
    return keras.layers.Concatenate(name="texture")(
        [keras.ops.reshape(quarters, (-1, 4 * int(first.shape[3]))), keras.ops.reshape(whole, (-1, int(last.shape[3])))]
    )


def feature_model(model):  # -> keras.Model
    """What the statistics are fitted on: the last layer's input and the texture moments."""
    import keras

    return keras.Model(model.inputs, {"features": model.layers[-1].input, "texture": texture_moments(model)})


def row_max(x):  # -> KerasTensor (N, 1)
    """The largest of each row of (N, K), as a max pooling: LiteRT's XNNPACK delegate supports pooling,
    not REDUCE_MAX; with reductions the flag's graph cost a batch of 256 7% more time instead of 4-5%
    (docs/benchmarks.md)."""
    import keras

    width = int(x.shape[1])
    return keras.ops.reshape(keras.ops.max_pool(keras.ops.reshape(x, (-1, 1, width, 1)), (1, width)), (-1, 1))


def nearest_class_distance(x, means: np.ndarray, factor: np.ndarray):  # -> KerasTensor (N, 1)
    """Squared Mahalanobis distance to the nearest class mean, with the precision factored as L L^T:
    min_c |(x - mu_c) L|^2 = |z|^2 - max_c (2 z . c - |c|^2) with z = (x - m) L, c = (mu_c - m) L, m the
    mean of the class means: matrix products and a max pooling (`row_max`); centring on m keeps
    float32 from cancelling."""
    import keras

    centre = means.mean(axis=0)
    z = keras.ops.matmul(x - centre.astype(np.float32), factor.astype(np.float32))
    classes = (means - centre) @ factor
    closeness = keras.ops.matmul(z, (2 * classes.T).astype(np.float32)) - (classes**2).sum(axis=1).astype(np.float32)
    squared = keras.ops.matmul(keras.ops.square(z), np.ones((factor.shape[1], 1), np.float32))
    return squared - row_max(closeness)


def evidence(model, stats: dict):  # -> (KerasTensor (N, 3), KerasTensor (N, classes))
    """The largest logit, negated (energy, the log-sum-exp of the logits, detects alike, but its
    exponentials split the delegated graph), the feature and the texture distance (`EVIDENCE_NAMES`);
    and the probabilities, from the same logits (the last layer rebuilt as product and activation, so
    the graph computes them once)."""
    import keras

    def array(key: str) -> np.ndarray:
        return np.asarray(stats[key], dtype=np.float64)

    last = model.layers[-1]
    features = last.input
    logits = keras.ops.matmul(features, last.kernel) + last.bias
    evidence = keras.layers.Concatenate()(
        [
            -row_max(logits),
            nearest_class_distance(features, array("feature_means"), array("feature_factor")),
            nearest_class_distance(texture_moments(model), array("texture_means"), array("texture_factor")),
        ]
    )
    return evidence, last.activation(logits)


def evidence_model(model, stats: dict):  # -> keras.Model
    """The classifier with its evidence (`serving.models.ood.EVIDENCE`), what the score's quantiles are taken of."""
    import keras

    values, probabilities = evidence(model, stats)
    return keras.Model(model.inputs, {"probabilities": probabilities, EVIDENCE: values})


def distinct(knots: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending knots with repeats (tied quantiles) dropped, each keeping its last value."""
    knots, values = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    last = np.r_[knots[1:] != knots[:-1], True]
    return knots[last], values[last]


def interpolant(knots: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """`np.interp(x, knots, values)` (flat beyond the ends) as first value + sum of slope changes x
    relu(x - knot): knots (ascending; repeats keep their last value), their slope changes, the value
    below the first knot. What a graph computes with one matrix product, a relu and another product."""
    knots, values = distinct(knots, values)
    slopes = np.r_[np.diff(values) / np.diff(knots), 0.0]
    return knots, np.diff(slopes, prepend=0.0), float(values[0])


def summed_interpolants(x, knots: list[np.ndarray], values: list[np.ndarray]):  # -> KerasTensor (N,)
    """sum_k np.interp(x[:, k], knots[k], values[k]) in three graph ops and a clip: every knot of every
    column is one unit of a relu layer. Each column is clipped at its last knot first, so far-out inputs
    do not add large terms that cancel (the slope changes sum to zero)."""
    import keras

    pieces = [interpolant(k, v) for k, v in zip(knots, values, strict=True)]
    columns, units = len(pieces), sum(len(knots) for knots, _, _ in pieces)
    spread, offsets = np.zeros((columns, units), np.float32), np.zeros(units, np.float32)
    changes = np.concatenate([change for _, change, _ in pieces]).astype(np.float32)[:, None]
    start = 0
    for column, (knots_k, _, _) in enumerate(pieces):
        spread[column, start : start + len(knots_k)], offsets[start : start + len(knots_k)] = 1.0, -knots_k
        start += len(knots_k)
    upper = np.array([knots_k[-1] for knots_k, _, _ in pieces], np.float32)
    hidden = keras.ops.relu(keras.ops.matmul(keras.ops.minimum(x, upper), spread) + offsets)
    base = np.float32(sum(first for _, _, first in pieces))
    return keras.ops.reshape(keras.ops.matmul(hidden, changes) + base, (-1,))


def scoring_model(model, stats: dict):  # -> keras.Model
    """The classifier with the extra output `serving.models.ood.SCORE` (N,): each evidence's rank among held-out
    garments as a z-score, their sum ranked among the same garments, all in the graph, so the server
    reads one number per image (ranking the evidence with numpy cost a single-image request a tenth
    of its time; docs/benchmarks.md)."""
    import keras

    z_knots = [np.asarray(knots, dtype=np.float64) for knots in stats["evidence_knots"]]
    z_values = [np.asarray(stats["z_levels"], dtype=np.float64)] * len(z_knots)
    values, probabilities = evidence(model, stats)
    summed = summed_interpolants(values, z_knots, z_values)
    score = summed_interpolants(
        keras.ops.reshape(summed, (-1, 1)), [np.asarray(stats["combined_knots"])], [np.asarray(stats["levels"])]
    )
    return keras.Model(model.inputs, {"probabilities": probabilities, SCORE: score}, name="scoring")


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


def z_levels() -> np.ndarray:
    """The z-scores each evidence's rank is read at: evenly spread over those of ranks 0.5/Q..1-0.5/Q,
    where the ranking with numpy (`serving.models.ood.OodDetector`) clips them."""
    return np.linspace(-1, 1, Z_KNOTS) * NormalDist().inv_cdf(1 - 0.5 / QUANTILES)


def summed_z(evidence: np.ndarray, stats: dict) -> np.ndarray:
    """(N, evidences) -> (N,) what the graph sums (`scoring_model`), with numpy."""
    knots = stats["evidence_knots"]
    return sum(np.interp(evidence[:, k], *distinct(knots[k], stats["z_levels"])) for k in range(len(knots)))


def fit_detector(model, dataset: Dataset, params: TrainParams) -> dict:
    """Everything the flag needs, from the training run's own split: the statistics the exported graph
    computes the evidence with (class means and precision factors on part of its training images), the
    garments' quantiles it ranks the evidence and their sum against, and the threshold (on its validation
    images), so the test split stays unseen until the flag is judged."""
    train_idx, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    fit_idx = np.random.default_rng(params.seed).permutation(train_idx)[:FIT_IMAGES]
    fitted = {k: v.astype(np.float64) for k, v in model_outputs(feature_model(model), dataset.x_train[fit_idx]).items()}
    labels, classes = dataset.y_train[fit_idx], len(dataset.class_names)
    feature_means, feature_factor = class_statistics(fitted["features"], labels, classes)
    texture_means, texture_factor = class_statistics(fitted["texture"], labels, classes)
    stats: dict = {
        "format": DETECTOR_FORMAT,
        "method": "rank among held-out garments of the summed z-scores (Stouffer) of each evidence's rank among "
        "them: the largest logit, feature and texture Mahalanobis distances; computed in the model's graph "
        "(ood_score)",
        "evidences": list(EVIDENCE_NAMES),
        "feature_means": compact(feature_means),
        "feature_factor": compact(feature_factor),
        "texture_means": compact(texture_means),
        "texture_factor": compact(texture_factor),
    }
    held_out = model_outputs(evidence_model(model, stats), dataset.x_train[val_idx])[EVIDENCE].astype(np.float64)
    z = z_levels()
    shares = np.array([NormalDist().cdf(float(v)) for v in z])
    stats["z_levels"] = z.tolist()
    stats["evidence_knots"] = compact(np.quantile(held_out, shares, axis=0).T)
    stats["levels"] = SCORE_LEVELS.tolist()
    stats["combined_knots"] = compact(np.quantile(summed_z(held_out, stats), SCORE_LEVELS))
    scoring = scoring_model(model, stats)
    photos = calibration_photos(dataset, val_idx, params.seed)
    photo_scores = {name: model_outputs(scoring, p)[SCORE] for name, p in photos.items()}
    stats["threshold"] = calibrated_threshold(model_outputs(scoring, dataset.x_train[val_idx])[SCORE], photo_scores)
    return stats


DETECTOR_FORMAT = 2  # the statistics (`OOD_ARTIFACT`) this code fits and builds the graph from


def detector_format(stats: dict) -> int:
    """The format statistics say they have; runs of 0.1.x stored none: format 2 when they hold the
    knots the graph interpolates, else 1 (evidences for the server to rank, of a graph that is gone)."""
    return int(stats.get("format") or (2 if "evidence_knots" in stats else 1))


def current(stats: dict | None) -> bool:
    """Whether a run's statistics are of the format this code exports a graph from."""
    return stats is not None and detector_format(stats) == DETECTOR_FORMAT


def shipped(stats: dict) -> dict:
    """What `ood.json` beside the exported model holds (format 2): the rest is baked into its graph."""
    return {"format": OOD_FORMAT, **{key: stats[key] for key in ("method", "evidences", "threshold")}}


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
    scoring, threshold = scoring_model(model, stats), stats["threshold"]

    def scores(pixels: np.ndarray) -> np.ndarray:
        return model_outputs(scoring, pixels)[SCORE]

    test = scores(test_pixels)
    flagged = {"test": float((test > threshold).mean())}
    for name in (name for name in PHOTO_SLICES if name in slices):
        flagged[name] = float((scores(slices[name][0]) > threshold).mean())
    outlier_scores = {source: scores(pixels) for source, pixels in outliers.items()}
    detected = {source: float((s > threshold).mean()) for source, s in outlier_scores.items()}
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
        stats["threshold"],
        report.auroc,
        ", ".join(f"{k} {v:.3f}" for k, v in report.flagged.items()),
        ", ".join(f"{k} {v:.3f}" for k, v in report.detected.items()),
    )
    return report
