"""Any image in, Fashion-MNIST's form out: the conversion on synthetic photos with known answers, the
dataset's own form left bit-identical, and the engineered hold-out made the same way every time."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serving.preprocessing import UNCHANGED, batch_to_dataset_form, decode_image, to_dataset_form
from tasks.evaluation.gates import TEST, ChampionScore, Evidence, check_gates, failed_gates
from tasks.evaluation.metrics import compute_metrics
from tasks.evaluation.slices import SLICES, encode, slice_files
from tasks.params import GateThresholds, ModelRef

CLASSES = [str(i) for i in range(10)]


def _photo(size=(200, 160), box=(70, 20, 130, 140), background=255, garment=40, mode="L") -> Image.Image:
    """A flat garment (a rectangle) on a flat background; box = left, top, right, bottom."""
    image = Image.new("L", size, background)
    image.paste(garment, box)
    return image.convert(mode)


def _expected(width: int, height: int, value: int = 215) -> np.ndarray:
    """A bright rectangle of this size (longest edge 28) centred on black: the dataset's form of it."""
    expected = np.zeros((28, 28), np.uint8)
    top, left = (28 - height) // 2, (28 - width) // 2
    expected[top : top + height, left : left + width] = value
    return expected


@pytest.mark.parametrize(
    ("name", "image", "inverted", "shape"),
    [
        ("dark garment on white", _photo(), True, (14, 28)),
        ("bright garment on black", _photo(background=0, garment=215), False, (14, 28)),
        ("dark garment on dark grey", _photo(background=100, garment=16), True, (14, 28)),
        ("off-centre on a wide frame", _photo((400, 300), (10, 150, 70, 270)), True, (14, 28)),
        ("wide garment", _photo((300, 300), (20, 100, 260, 160)), True, (28, 7)),
        ("RGB photo", _photo(mode="RGB"), True, (14, 28)),
    ],
)
def test_a_garment_is_trimmed_scaled_and_centred_on_black(name, image, inverted, shape):
    pixels, applied = decode_image(encode(image, "PNG"))
    assert applied == {"inverted": inverted, "trimmed": True, "resized": True}, name
    width, height = shape
    assert np.abs(pixels.astype(int) - _expected(width, height)).mean() < 8, name
    assert pixels[0, 0] < 30, name
    assert pixels[27, 27] < 30, name
    assert pixels[14, 14] > 200, name  # centred, black around


def test_a_transparent_cutout_is_put_on_white_first():
    cutout = Image.new("RGBA", (224, 224), (0, 0, 0, 0))
    cutout.paste((30, 60, 90, 255), (82, 12, 142, 212))  # coloured garment, transparent around it
    pixels, applied = decode_image(encode(cutout, "PNG"))
    assert applied == {"inverted": True, "trimmed": True, "resized": True}
    assert np.abs(pixels.astype(int) - _expected(8, 28, value=200)).mean() < 12


def test_exif_orientation_is_applied_before_anything_else():
    upright = _photo((160, 200), (20, 70, 140, 130))  # a wide garment in a tall frame
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone stores a rotated shot
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pixels, _ = decode_image(encode(stored.convert("RGB"), "JPEG", quality=95, exif=exif.tobytes()))
    expected, _ = decode_image(encode(upright.convert("RGB"), "JPEG", quality=95))
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 4
    assert pixels[:, 14].max() > 200
    assert pixels[3, 14] < 30  # wide: empty rows above and below


def test_dataset_form_is_left_bit_identical(small_dataset):
    images = small_dataset.x_test[:200]
    for image in images:
        pixels, applied = decode_image(encode(Image.fromarray(image), "PNG"))
        assert applied == UNCHANGED
        assert np.array_equal(pixels, image)
    as_json = images.astype(np.float32)
    converted, applied = batch_to_dataset_form(as_json)
    assert converted is as_json
    assert applied == [UNCHANGED] * len(images)


def test_a_negated_dataset_image_is_negated_back(small_dataset):
    image = small_dataset.x_test[0].astype(np.float32)
    pixels, applied = to_dataset_form(255 - image)
    assert applied == {"inverted": True, "trimmed": False, "resized": False}
    assert np.array_equal(pixels, image)


def test_blank_and_unsupported_inputs_stay_safe():
    pixels, applied = decode_image(encode(Image.new("L", (300, 200), 255), "PNG"))  # nothing but background
    assert pixels.shape == (28, 28)
    assert pixels.max() == 0
    assert applied["inverted"]
    flat, _ = decode_image(encode(Image.new("L", (300, 200), 255), "PNG"), convert=False)
    assert flat.min() == 255  # the old behaviour on request: the frame squeezed, nothing else


def test_slices_are_the_same_files_every_time_and_differ_by_seed(small_dataset):
    x, y = small_dataset.x_test, small_dataset.y_test
    for name in SLICES:
        first, labels = slice_files(name, x, y, 20, seed=3)
        again, same_labels = slice_files(name, x, y, 20, seed=3)
        assert first == again, name
        assert np.array_equal(labels, same_labels), name
        assert slice_files(name, x, y, 20, seed=4)[0] != first, name


def test_a_model_that_passes_on_the_dataset_but_fails_a_slice_is_rejected():
    labels = np.arange(10).repeat(10)
    good = compute_metrics(labels, labels, CLASSES)  # accuracy 1.0 on the test split
    thresholds = GateThresholds(min_accuracy=0.9, min_class_recall=0.5, max_regression=0.01)
    slices = {"catalogue": np.arange(100) < 40, "cutout": np.arange(100) < 95}  # 0.40 and 0.95 right
    failed = failed_gates(check_gates(Evidence(good, slices), thresholds))
    assert [r.name for r in failed] == ["slice.catalogue"]
    assert "catalogue accuracy 0.4000 vs minimum 0.8600" in failed[0].detail
    # The same test accuracy as the champion, but 50 of its 1,000 cutout images lost: rejected by the paired test.
    champion_cutout = np.ones(1000, bool)
    champion = ChampionScore(ModelRef("clothes", 2), {TEST: labels == labels, "cutout": champion_cutout})
    candidate = {TEST: labels == labels, "cutout": np.r_[np.zeros(50, bool), np.ones(950, bool)]}
    regressed = check_gates(Evidence(good, candidate), thresholds, champion)
    assert [r.name for r in failed_gates(regressed)] == ["slice.cutout"]
    assert "-0.0500 vs champion v2 on the same images (0 won, 50 lost, margin 0.02): worse" in regressed[-1].detail


def test_integer_pixels_take_the_fast_conversion_with_the_same_result():
    from serving.errors import InvalidInput
    from serving.preprocessing import pixels_from_nested

    images = np.random.default_rng(3).integers(0, 256, (5, 28, 28))
    for value, batch in ((images.tolist(), True), (images[0].tolist(), False)):
        pixels = pixels_from_nested(value, batch=batch)
        assert pixels.dtype == np.float32
        assert np.array_equal(pixels, np.asarray(value, np.float32).reshape(-1, 28, 28))
    mixed = images.tolist()
    mixed[2][3][4] = 7.5  # one float: the general path, same values
    assert pixels_from_nested(mixed, batch=True)[2, 3, 4] == 7.5
    with pytest.raises(InvalidInput, match="between 0 and 1"):  # TF Serving's 0-1 inputs are range-checked
        pixels_from_nested(images.tolist(), batch=True, max_value=1.0)
