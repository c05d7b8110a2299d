from __future__ import annotations

import numpy as np
import pytest

from serving.preprocessing import to_model_input
from tasks.evaluation.gates import check_gates, failed_gates, gate_tags
from tasks.evaluation.metrics import compute_metrics
from tasks.params import Architecture, GateThresholds, TrainParams
from tasks.training.train import augmented_batches, build_lenet5, epoch_line, learning_rate_schedule, relit


def test_lenet5_has_the_course_architecture():
    model = build_lenet5()
    assert model.count_params() == 44_426
    assert [layer.name for layer in model.layers] == [
        "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2", "probabilities",
    ]  # fmt: skip
    out = np.asarray(model(to_model_input(np.zeros((3, 28, 28), np.uint8))))
    assert out.shape == (3, 10)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_variants_change_the_layers_and_misspelt_fields_are_refused():
    wide = Architecture(conv1_filters=32, conv2_filters=64, dropout=0.25, batch_norm=True, pooling="max")
    names = [layer.name for layer in build_lenet5(architecture=wide).layers]
    assert names[:4] == ["conv1", "bn1", "relu1", "pool1"] and "dropout1" in names
    assert type(build_lenet5(architecture=wide).get_layer("pool1")).__name__ == "MaxPooling2D"
    with pytest.raises(ValueError, match="epoch"):
        TrainParams.model_validate({"epoch": 5})


def test_augmentation_moves_and_mirrors_images_but_keeps_labels():
    x = np.zeros((64, 28, 28, 1), np.float32)
    x[:, 10:18, 4:9] = 1.0  # a bar left of centre
    y = np.arange(64) % 10
    images, labels = map(np.asarray, next(iter(augmented_batches(x, y, 64, seed=1))))
    assert images.shape == x.shape and sorted(labels) == sorted(y)
    assert not np.allclose(images, x)
    right_half = images[:, :, 14:].sum(axis=(1, 2, 3)) > images[:, :, :14].sum(axis=(1, 2, 3))
    assert 0 < right_half.sum() < 64  # some mirrored, some not
    assert np.allclose(images.sum(axis=(1, 2, 3)), 40.0, atol=8.0)  # shifted by <= 2 px: the bar stays in frame


def test_preprocessing_scales_to_unit_range_with_channel_axis():
    x = to_model_input(np.array([[[0, 255] * 14] * 28], dtype=np.uint8))
    assert x.shape == (1, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


def test_metrics_match_a_hand_computed_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    evaluation = compute_metrics(y_true, y_pred, ["a", "b", "c"])
    assert evaluation.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert evaluation.accuracy == pytest.approx(4 / 6)
    assert evaluation.per_class["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": 0.8, "support": 3}
    assert evaluation.per_class["b"]["precision"] == pytest.approx(0.5)
    assert evaluation.macro_recall == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert evaluation.worst_class_recall == ("b", 0.5)
    assert "test_recall_a" in evaluation.flat_metrics()


def test_never_predicted_class_has_zero_precision_not_nan():
    evaluation = compute_metrics(np.array([0, 1]), np.array([0, 0]), ["T-shirt/top", "Trouser"])
    assert evaluation.per_class["Trouser"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert "test_f1_t_shirt_top" in evaluation.flat_metrics()


THRESHOLDS = GateThresholds(min_accuracy=0.6, min_class_recall=0.4, max_regression=0.01)


def _evaluation(accuracy_hits: int):
    y_true = np.repeat(np.arange(2), 5)
    y_pred = y_true.copy()
    y_pred[: 10 - accuracy_hits] = 1 - y_pred[: 10 - accuracy_hits]
    return compute_metrics(y_true, y_pred, ["x", "y"])


def test_gates_pass_without_champion_and_say_so():
    results = check_gates(_evaluation(9), THRESHOLDS)
    assert failed_gates(results) == []
    assert "no champion" in results[-1].detail
    assert gate_tags(results)["gate.no_regression"] == "pass"


def test_every_failing_gate_is_reported_with_numbers():
    results = check_gates(_evaluation(5), THRESHOLDS, champion_accuracy=0.9, champion_label="champion v3")
    assert {r.name for r in failed_gates(results)} == {"min_accuracy", "min_class_recall", "no_regression"}
    assert "champion v3 0.9000" in results[-1].detail


def test_regression_within_tolerance_passes():
    results = check_gates(_evaluation(9), THRESHOLDS, champion_accuracy=0.905)
    assert results[-1].passed and results[-1].value == pytest.approx(-0.005)


def test_epoch_line_bounds_the_time_left_by_the_epochs_not_yet_run():
    logs = {"loss": 0.41, "accuracy": 0.85, "val_loss": 0.39, "val_accuracy": 0.86}
    line = epoch_line(2, 30, logs, elapsed=45.0)
    assert line.startswith("epoch 3/30 loss 0.4100 acc 0.8500 val_loss 0.3900 val_acc 0.8600")
    assert line.endswith("15.0 s/epoch, at most 6 min 45 s left")
    assert "█" * 2 + "░" * 18 in epoch_line(2, 30, logs, elapsed=45.0, bar=True)


def test_cosine_schedule_warms_up_for_an_epoch_then_decays_to_zero_at_the_last():
    params = TrainParams(schedule="cosine", learning_rate=4e-3, epochs=10)
    schedule = learning_rate_schedule(params, steps_per_epoch=100)
    rates = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert rates[0] == pytest.approx(4e-4) and rates[1] == pytest.approx(2.2e-3)  # warm-up, linear
    assert rates[2] == pytest.approx(4e-3)  # the peak after one epoch
    assert rates[3] == pytest.approx(2e-3, rel=1e-3)  # half-way through the decay
    assert rates[4] == pytest.approx(0.0, abs=1e-9)  # the end of the last epoch
    assert learning_rate_schedule(TrainParams(schedule="plateau", learning_rate=2e-3), 100) == 2e-3  # a constant


def test_relighting_dims_and_lifts_the_chosen_share_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    pixels[:, 0, 0] = 0  # a black pixel in every image
    out = relit(pixels, 0.2, seed=1)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    changed = (out != pixels).any(axis=(1, 2))
    assert 0.17 < changed.mean() < 0.23
    assert (out[~changed] == pixels[~changed]).all()
    black = out[changed, 0, 0].astype(int)  # brightness: black lifted by 0-40 levels
    assert black.max() <= 40 and black.mean() > 10
    spread = out[changed].std(axis=(1, 2)) / pixels[changed].std(axis=(1, 2))
    assert spread.min() > 0.55 and spread.max() < 1.01  # contrast: 0.6-1.0
    assert (relit(pixels, 0.2, seed=1) == out).all()  # seeded
    assert relit(pixels, 0.0, seed=1) is pixels
