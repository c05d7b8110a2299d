"""The out-of-distribution flag: fitted as the pipeline fits it, it separates non-clothing inputs from
garments; the server computes the same scores from the exported model, and every protocol carries them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from serving.models.store import ModelStore
from serving.preprocessing import to_model_input
from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.gates import ood_gates
from tasks.evaluation.ood import (
    calibrated_threshold,
    distinct,
    evidence_model,
    feature_model,
    judge_detector,
    model_outputs,
    scoring_model,
    summed_interpolants,
    summed_z,
)
from tasks.evaluation.ood_sources import OOD_SOURCES, build_ood_slices, ood_files
from tasks.evaluation.slices import build_slices
from tasks.params import GateThresholds


@pytest.fixture(scope="module")
def test_split(fashion_mnist):
    return fashion_mnist.x_test[:2000], fashion_mnist.y_test[:2000]


def test_sources_are_deterministic_files_the_server_reads():
    for source in OOD_SOURCES:
        files = ood_files(source, 3, seed=5)
        assert files == ood_files(source, 3, seed=5)
        assert len(set(files)) == 3
        assert Image.open(io.BytesIO(files[0])).format in {"PNG", "JPEG"}


def test_flag_separates_noise_and_digits_from_garments(trained_model, ood_stats, test_split):
    """Trained for 3 epochs only, still: noise and drawn digits flagged, garments not."""
    x, y = test_split
    slices = build_slices(x, y, size=200, seed=0)
    outliers = {k: v for k, v in build_ood_slices(100, seed=1).items() if k in ("noise", "digits")}
    report = judge_detector(ood_stats, trained_model, x, slices, outliers)
    assert report.detected["noise"] >= 0.8, report
    assert report.detected["digits"] >= 0.8, report
    assert report.flagged["test"] <= 0.08, report
    assert all(report.flagged[name] <= 0.15 for name in ("catalogue", "cutout", "small_offcentre", "jpeg30")), report
    assert report.auroc >= 0.9
    rows = {r.name: r for r in ood_gates(report, GateThresholds())}
    assert rows["ood.false_flags"].passed
    assert rows["ood.auroc"].passed


def test_a_detector_that_flags_nothing_fails_the_gates(trained_model, ood_stats, test_split):
    x = test_split[0]
    # Scores are ranks in 0-1, computed in float32: the most unusual inputs can come out a rounding step
    # above 1.0, so a detector blind to everything needs a threshold clearly above the range.
    blind = {**ood_stats, "threshold": 1.5}
    report = judge_detector(blind, trained_model, x, {}, build_ood_slices(30, seed=2))
    assert report.metrics()["ood.detection_rate"] == 0
    failed = [r.name for r in ood_gates(report, GateThresholds()) if not r.passed]
    assert "ood.detection" in failed


def test_the_graph_computes_energy_and_the_mahalanobis_distances(trained_model, ood_stats, test_split):
    """The evidence the exported graph computes equals the textbook formulas, in float64 numpy."""
    import keras

    from serving.models.ood import EVIDENCE

    x = np.concatenate([test_split[0][:200], build_ood_slices(20, seed=6)["stripes"]])
    fitted = model_outputs(feature_model(trained_model), x)
    got = model_outputs(evidence_model(trained_model, ood_stats), x)[EVIDENCE]
    pooling = [layer.output for layer in trained_model.layers if isinstance(layer, keras.layers.AveragePooling2D)]
    pooled = keras.Model(trained_model.inputs, pooling).predict(to_model_input(x), verbose=0)
    first, last = pooled[0], pooled[-1]
    half = first.shape[1] // 2
    quarters = first[:, : 2 * half, : 2 * half].reshape(len(x), 2, half, 2, half, -1).mean(axis=(2, 4))
    texture = np.concatenate([quarters.reshape(len(x), -1), last.mean(axis=(1, 2))], axis=1)
    assert np.allclose(fitted["texture"], texture, rtol=1e-4, atol=1e-5)

    def nearest(values: np.ndarray, prefix: str) -> np.ndarray:
        means, factor = (np.asarray(ood_stats[f"{prefix}_{key}"]) for key in ("means", "factor"))
        return np.min([(((values - mean) @ factor) ** 2).sum(axis=1) for mean in means], axis=0)

    features = fitted["features"].astype(np.float64)
    weights, bias = trained_model.layers[-1].get_weights()
    logits = features @ weights + bias
    assert np.allclose(got[:, 0], -logits.max(axis=1), rtol=1e-4, atol=1e-3)
    assert np.allclose(got[:, 1], nearest(features, "feature"), rtol=1e-3)
    assert np.allclose(got[:, 2], nearest(fitted["texture"].astype(np.float64), "texture"), rtol=1e-3)


def test_the_graph_ranks_the_evidence_as_numpy_interpolates_it(trained_model, ood_stats, test_split):
    """The score the graph answers: each evidence's z-score and their sum's rank, read off the garments'
    quantiles by linear interpolation, as np.interp reads them."""
    from serving.models.ood import EVIDENCE, SCORE

    x = np.concatenate(
        [test_split[0][:300], build_ood_slices(30, seed=4)["noise"], build_ood_slices(30, seed=4)["text"]]
    )
    evidence = model_outputs(evidence_model(trained_model, ood_stats), x)[EVIDENCE].astype(np.float64)
    expected = np.interp(summed_z(evidence, ood_stats), *distinct(ood_stats["combined_knots"], ood_stats["levels"]))
    got = model_outputs(scoring_model(trained_model, ood_stats), x)[SCORE]
    assert np.abs(got - expected).max() <= 1e-3
    assert expected[:300].mean() < 0.6 < expected[300:].mean()


def test_interpolants_in_the_graph_equal_np_interp():
    """Far beyond the last knot (noise scores distances in the thousands), below the first, on a knot,
    and with repeated knots (tied quantiles)."""
    knots = [np.array([0.0, 1.0, 1.0, 3.0, 10.0]), np.array([-5.0, -2.0, 4.0])]
    values = [np.array([-3.0, -1.0, 0.0, 2.0, 3.0]), np.array([0.0, 0.5, 1.0])]
    x = np.array([[-7.0, -9.0], [0.5, -2.0], [1.0, 0.0], [2.0, 3.9], [9.0, 4.0], [1e6, 1e7]], np.float32)
    expected = sum(
        np.interp(x[:, k], np.unique(knots[k]), [-3.0, 0.0, 2.0, 3.0] if k == 0 else values[k]) for k in range(2)
    )
    got = np.asarray(summed_interpolants(x, knots, values))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def legacy_stats(evidences: int) -> dict:
    """`ood.json` of format 1, as exports of 0.1.x hold it (no `format`): quantiles ranked by the server."""
    garments = np.random.default_rng(1).gamma(2.0, 1.0, (5000, evidences))
    reference = np.quantile(garments, np.linspace(0, 1, 1001), axis=0).T
    return {
        "evidences": ["energy", "feature_distance", "texture_distance", "pixel_distance"][:evidences],
        "reference_quantiles": reference.tolist(),
        "threshold": 0.95,
    }


def test_versions_exported_with_three_or_four_evidences_still_load():
    from serving.models.ood import EVIDENCE, OodDetector, OodFlag

    three, four = legacy_stats(3), legacy_stats(4)
    assert OodDetector.from_dict(three).scores(np.zeros((2, 3))).shape == (2,)
    with pytest.raises(ValueError, match="must hold 3 rows"):
        OodDetector.from_dict({**three, "reference_quantiles": four["reference_quantiles"]})
    flag = OodFlag.from_dict(four)
    scores = flag.scores({EVIDENCE: np.array([[0.0, 0.0, 0.0, 0.0], [50.0, 50.0, 50.0, 50.0]])})
    assert scores[0] < flag.threshold < scores[1]


def test_exports_before_stouffers_method_keep_the_largest_rank():
    from serving.models.ood import OodDetector

    stats = legacy_stats(4)
    evidence = np.asarray(stats["reference_quantiles"])[:, [100, 500, 900]].T  # three images, 4 evidences
    legacy = OodDetector.from_dict(stats)
    assert legacy.combined is None
    np.testing.assert_allclose(legacy.scores(evidence), legacy.ranks(evidence).max(axis=1) / 1001)


def test_statistics_of_the_earlier_form_are_not_exported_with_a_graph_they_do_not_fit(ood_stats):
    from tasks.evaluation.ood import current

    assert current(ood_stats)
    assert not current(legacy_stats(4))
    assert not current(None)


def test_each_ood_file_is_read_by_the_reader_of_its_format():
    from serving.models.ood import OodFlag, served_format

    legacy = legacy_stats(3)
    assert served_format(legacy) == 1  # 0.1.x: no `format`, told by its quantiles
    assert OodFlag.from_dict({**legacy, "format": 1}).detector is not None
    assert served_format({"threshold": 0.9}) == 2  # 0.1.x, whose graph already answered the score
    assert OodFlag.from_dict({"format": 2, "threshold": 0.9}).detector is None
    with pytest.raises(ValueError, match="has format 3; this server reads formats 1 and 2"):
        OodFlag.from_dict({"format": 3, "threshold": 0.9})


def test_the_statistics_and_the_exported_file_say_their_format(ood_stats):
    from tasks.evaluation.ood import DETECTOR_FORMAT, current, detector_format, shipped

    assert ood_stats["format"] == DETECTOR_FORMAT
    assert detector_format({k: v for k, v in ood_stats.items() if k != "format"}) == DETECTOR_FORMAT  # 0.1.x
    assert shipped(ood_stats)["format"] == 2
    assert not current({**ood_stats, "format": DETECTOR_FORMAT + 1})


def test_a_model_card_of_another_format_is_refused():
    from tasks.registry.policy import CARD_FORMAT, checked_card

    assert checked_card({"run_id": "r"}, "clothes v1") == {"run_id": "r"}  # 0.1.x: format 1
    assert checked_card({"format": CARD_FORMAT}, "clothes v2")["format"] == CARD_FORMAT
    with pytest.raises(ValueError, match="clothes v3 has format 2"):
        checked_card({"format": 2}, "clothes v3")


def test_stouffer_ranks_an_input_unusual_on_every_evidence_above_one_unusual_on_one():
    """Garments are now and then very unusual on one evidence; an input somewhat unusual on all of them
    is rarer still, and the largest rank cannot see it."""
    from scipy.stats import norm

    from serving.models.ood import OodDetector

    rng = np.random.default_rng(0)
    garments = rng.uniform(0, 1, (20_000, 4))
    quantiles = np.linspace(0, 1, 1001)
    reference = np.quantile(garments, quantiles, axis=0).T
    summed = OodDetector(reference, 1.0).stouffer(garments)
    detector = OodDetector(reference, 1.0, np.quantile(summed, quantiles))
    somewhat, one = np.full((1, 4), 0.97), np.array([[0.995, 0.5, 0.5, 0.5]])
    assert detector.scores(somewhat)[0] > 0.999 > detector.scores(one)[0]
    assert OodDetector(reference, 1.0).scores(somewhat)[0] < OodDetector(reference, 1.0).scores(one)[0]
    ranks = detector.ranks(garments[:500])  # the z-scores, written out with scipy
    expected = norm.ppf(np.clip(ranks / 1001, 0.5 / 1001, 1 - 0.5 / 1001)).sum(axis=1)
    np.testing.assert_allclose(detector.stouffer(garments[:500]), expected, rtol=1e-9)
    assert abs((detector.scores(garments) > 0.95).mean() - 0.05) < 0.005  # the score is a rank among garments


def test_threshold_respects_both_budgets():
    rng = np.random.default_rng(0)
    garments = rng.uniform(0, 1, 10_000)
    photos = {"catalogue": rng.uniform(0.2, 1, 1000), "cutout": rng.uniform(0, 1, 1000)}
    threshold = calibrated_threshold(garments, photos)
    assert (garments > threshold).mean() <= 0.05
    assert all((scores > threshold).mean() <= 0.10 for scores in photos.values())
    assert threshold == pytest.approx(0.95, abs=0.01)  # the garments bind: 5% of 0-1 lie above 0.95
    photos["catalogue"] = rng.uniform(0.5, 1, 1000)  # now the catalogue photos bind: 10% of 0.5-1 lie above 0.95
    assert calibrated_threshold(garments, photos) == pytest.approx(0.95, abs=0.01)
    photos["catalogue"] = rng.uniform(0.8, 1, 1000)
    assert calibrated_threshold(garments, photos) == pytest.approx(0.98, abs=0.01)


def test_server_scores_equal_the_pipelines(model_root, trained_model, ood_stats, test_split):
    """The exported LiteRT model gives what the pipeline computed with Keras, image by image."""
    from serving.models.ood import SCORE

    x = np.concatenate([test_split[0][:300], build_ood_slices(50, seed=3)["noise"]])
    model = ModelStore.discover(model_root).get("clothes", 2)
    assert model is not None
    assert model.ood is not None
    _, served = model.predict(to_model_input(x))
    expected = model_outputs(scoring_model(trained_model, ood_stats), x)[SCORE]
    assert served is not None
    assert np.abs(served - expected).max() <= 0.01
    threshold = ood_stats["threshold"]
    assert np.mean((served > threshold) == (expected > threshold)) >= 0.99


@pytest.mark.parametrize(
    "train",
    [
        {
            "architecture": {
                "conv1_filters": 8,
                "conv2_filters": 16,
                "kernel_size": 3,
                "batch_norm": True,
                "pooling": "max",
            },
            "moved_copies": 0.2,
        },
        {"preset": "vgg", "architecture": {"conv1_filters": 8, "conv2_filters": 16}},
    ],
    ids=["batch-normalised", "vgg"],
)
def test_another_architecture_exports_and_serves_with_the_flag(fashion_dir, tmp_path, train):
    """The flag reads layers by kind (pooling, flatten, the last layer), not by name: a 3x3 variant with
    batch normalisation and max pooling, and the vgg preset (trained in bfloat16 with a flip layer), are
    fitted, exported and served like LeNet-5."""
    from tasks.data.dataset import FASHION_MNIST_CLASSES
    from tasks.evaluation.ood import fit_detector
    from tasks.params import TrainParams
    from tasks.release.export import build_metadata, export_model
    from tasks.training.train import train_model

    dataset = load_fashion_mnist(fashion_dir).subset(3000, 500)
    params = TrainParams.model_validate({**train, "epochs": 1})
    model = train_model(dataset, params).model
    metadata = build_metadata(model, "wide", 1, FASHION_MNIST_CLASSES, None, {})
    export_model(model, tmp_path, metadata, fit_detector(model, dataset, params))
    served = ModelStore.discover(tmp_path).get("wide", 1)
    assert served is not None
    assert served.ood is not None
    probabilities, scores = served.predict(to_model_input(dataset.x_test[:50]))
    assert probabilities.shape == (50, 10)
    assert scores is not None
    assert scores.shape == (50,)
    assert scores.min() >= 0
    assert scores.max() <= 1
