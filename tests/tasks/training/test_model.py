"""LeNet-5 and its variants, augmentation, the learning-rate schedule and the epoch line: `tasks.training`."""

from __future__ import annotations

import numpy as np
import pytest

from serving.preprocessing import to_model_input
from tasks.params import Architecture, TrainParams
from tasks.training.train import (
    augmented_batches,
    build_lenet5,
    epoch_line,
    inference_copy,
    learning_rate_schedule,
    relit,
)


def test_lenet5_has_the_course_architecture():
    model = build_lenet5()
    assert model.count_params() == 61_706  # LeCun et al. 1998
    assert [layer.name for layer in model.layers] == [
        "pad",
        "standardise",
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "flatten",
        "fc1",
        "fc2",
        "probabilities",
    ]
    assert model.get_layer("conv1").output.shape[1:] == (28, 28, 6)  # C1 of a 32x32 input
    assert model.get_layer("pool2").output.shape[1:] == (5, 5, 16)  # S4: 400 inputs to the first dense layer
    out = np.asarray(model(to_model_input(np.zeros((3, 28, 28), np.uint8))))
    assert out.shape == (3, 10)
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    plain = build_lenet5(architecture=Architecture(standardise=False, input_padding=0))
    assert plain.layers[0].name == "conv1"
    assert plain.count_params() == 44_426


def test_the_padding_is_background_whatever_the_standardisation():
    model = build_lenet5(input_moments=(0.3, 0.35))
    padded = np.asarray(model.get_layer("standardise")(model.get_layer("pad")(np.zeros((1, 28, 28, 1)))))
    assert padded.shape == (1, 32, 32, 1)
    assert np.allclose(padded, -0.3 / 0.35)  # border = a black pixel


def test_trained_model_standardises_its_input_with_the_training_images_moments(trained_model, fashion_dir):
    from tasks.data.sources import load_fashion_mnist

    images = to_model_input(load_fashion_mnist(fashion_dir).x_test[:2000])
    seen = np.asarray(trained_model.get_layer("standardise")(images))
    assert abs(seen.mean()) < 0.1
    assert abs(seen.std() - 1) < 0.1  # test images: close to the training moments


def test_variants_change_the_layers_and_misspelt_fields_are_refused():
    wide = Architecture(conv1_filters=32, conv2_filters=64, dropout=0.25, batch_norm=True, pooling="max")
    names = [layer.name for layer in build_lenet5(architecture=wide).layers]
    assert names[:6] == ["pad", "standardise", "conv1", "bn1", "relu1", "pool1"]
    assert "dropout1" in names
    assert type(build_lenet5(architecture=wide).get_layer("pool1")).__name__ == "MaxPooling2D"
    with pytest.raises(ValueError, match="epoch"):
        TrainParams.model_validate({"epoch": 5})


def test_vgg_preset_fills_what_a_run_leaves_unset():
    vgg = TrainParams(preset="vgg")
    assert vgg.architecture.convs_per_block == 2
    assert vgg.architecture.padding == "same"
    assert vgg.architecture.input_padding == 0
    assert vgg.flip
    assert vgg.mixed_precision
    assert vgg.epochs == 12
    assert vgg.moved_copies == 0
    given = TrainParams.model_validate({"preset": "vgg", "epochs": 3, "architecture": {"dense1": 64}})
    assert given.epochs == 3
    assert given.architecture.dense1 == 64
    assert given.architecture.conv2_filters == 64
    assert TrainParams(preset="lenet5") == TrainParams()
    with pytest.raises(ValueError, match="preset"):
        TrainParams.model_validate({"preset": "resnet"})


def test_vgg_blocks_keep_the_size_and_training_options_leave_a_plain_float32_copy():
    arch = TrainParams(preset="vgg").architecture
    trained = build_lenet5(architecture=arch, input_moments=(0.3, 0.35), flip=True, mixed_precision=True)
    names = [layer.name for layer in trained.layers]
    assert names[:5] == ["standardise", "flip", "conv1a", "conv1b", "pool1"]
    assert "conv2b" in names
    assert trained.get_layer("pool2").output.shape[1:] == (7, 7, 64)  # same padding: 28 -> 14 -> 7
    assert trained.get_layer("conv1a").compute_dtype == "bfloat16"
    assert trained.get_layer("probabilities").compute_dtype == "float32"
    copy = inference_copy(trained, 10, arch, (0.3, 0.35))
    assert "flip" not in [layer.name for layer in copy.layers]
    assert {layer.compute_dtype for layer in copy.layers} == {"float32"}
    for layer in copy.layers:
        for mine, theirs in zip(layer.get_weights(), trained.get_layer(layer.name).get_weights(), strict=True):
            assert mine.dtype == np.float32
            assert np.array_equal(mine, theirs)
    images = to_model_input(np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8))
    # the same function, up to bfloat16's rounding of the hidden layers
    assert np.allclose(np.asarray(copy(images)), np.asarray(trained(images, training=False)), atol=0.02)


def test_augmentation_moves_and_mirrors_images_but_keeps_labels():
    x = np.zeros((64, 28, 28, 1), np.float32)
    x[:, 10:18, 4:9] = 1.0  # a bar left of centre
    y = np.arange(64) % 10
    images, labels = map(np.asarray, next(iter(augmented_batches(x, y, 64, seed=1))))
    assert images.shape == x.shape
    assert sorted(labels) == sorted(y)
    assert not np.allclose(images, x)
    right_half = images[:, :, 14:].sum(axis=(1, 2, 3)) > images[:, :, :14].sum(axis=(1, 2, 3))
    assert 0 < right_half.sum() < 64  # some mirrored, some not
    assert np.allclose(images.sum(axis=(1, 2, 3)), 40.0, atol=8.0)  # shifted by <= 2 px: the bar stays in frame


def test_preprocessing_scales_to_unit_range_with_channel_axis():
    x = to_model_input(np.array([[[0, 255] * 14] * 28], dtype=np.uint8))
    assert x.shape == (1, 28, 28, 1)
    assert x.dtype == np.float32
    assert x.min() == 0.0
    assert x.max() == 1.0


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
    assert rates[0] == pytest.approx(4e-4)
    assert rates[1] == pytest.approx(2.2e-3)  # warm-up, linear
    assert rates[2] == pytest.approx(4e-3)  # the peak after one epoch
    assert rates[3] == pytest.approx(2e-3, rel=1e-3)  # half-way through the decay
    assert rates[4] == pytest.approx(0.0, abs=1e-9)  # the end of the last epoch
    assert learning_rate_schedule(TrainParams(schedule="plateau", learning_rate=2e-3), 100) == 2e-3  # a constant


def test_relighting_dims_and_lifts_the_chosen_share_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2000, 28, 28), dtype=np.uint8)
    pixels[:, 0, 0] = 0  # a black pixel in every image
    out = relit(pixels, 0.2, seed=1)
    assert out.dtype == np.uint8
    assert out.shape == pixels.shape
    changed = (out != pixels).any(axis=(1, 2))
    assert 0.17 < changed.mean() < 0.23
    assert (out[~changed] == pixels[~changed]).all()
    black = out[changed, 0, 0].astype(int)  # brightness: black lifted by 0-40 levels
    assert black.max() <= 40
    assert black.mean() > 10
    spread = out[changed].std(axis=(1, 2)) / pixels[changed].std(axis=(1, 2))
    assert spread.min() > 0.55
    assert spread.max() < 1.01  # contrast: 0.6-1.0
    assert (relit(pixels, 0.2, seed=1) == out).all()  # seeded
    assert relit(pixels, 0.0, seed=1) is pixels
