from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.dataset import FASHION_MNIST_CLASSES, Dataset, stratified_split
from tasks.data.loader import load_dataset
from tasks.data.sources import (
    DataNotFound,
    DataValidationError,
    load_fashion_mnist,
    load_idx_directory,
    load_image_folder,
    read_idx,
)
from tasks.data.validation import validate_data
from tasks.params import DataSpec
from tasks.settings import IDX_FILES, Settings


def write_idx(path: Path, array: np.ndarray) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())
    return path


def synthetic(n_train: int = 40, n_test: int = 20, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        np.arange(n_train) % 10,
        rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        np.arange(n_test) % 10,
    )


def test_read_idx_round_trips_images_and_labels(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x.gz", images)), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "y.gz", labels)), labels)


def test_read_idx_rejects_bad_magic_and_truncated_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as handle:
        handle.write(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataValidationError, match="magic"):
        read_idx(bad)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataValidationError, match="10 bytes"):
        read_idx(truncated)
    whole = write_idx(tmp_path / "whole.gz", np.zeros((10, 28, 28), np.uint8)).read_bytes()
    cut = tmp_path / "cut-idx3-ubyte.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataValidationError, match=r"cut-idx3-ubyte\.gz: damaged gzip file"):
        read_idx(cut)


def test_local_idx_directory_loads_like_keras(tmp_path):
    data = synthetic()
    for key, name in IDX_FILES.items():
        write_idx(tmp_path / name, getattr(data, key))
    loaded = load_idx_directory(tmp_path)
    assert loaded.digest == data.digest
    assert loaded.origin == "idx"
    assert loaded.y_train.dtype == np.int64


def test_missing_idx_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte\.gz"):
        load_fashion_mnist(tmp_path)


def test_real_fashion_mnist_is_complete_and_valid(fashion_dir):
    dataset = load_fashion_mnist(fashion_dir)
    counts = validate_data(dataset)
    assert dataset.x_train.shape == (60000, 28, 28)
    assert dataset.x_test.shape == (10000, 28, 28)
    assert set(counts["train"].values()) == {6000}
    assert set(counts["test"].values()) == {1000}


def test_data_spec_limits_take_the_first_images(fashion_dir):
    dataset = load_dataset(DataSpec(train_limit=300, test_limit=100), Settings(data_dir=fashion_dir))
    full = load_fashion_mnist(fashion_dir)
    assert len(dataset.y_train) == 300
    assert len(dataset.y_test) == 100
    assert np.array_equal(dataset.x_test, full.x_test[:100])


def _write_png(path: Path, value: int, size=(28, 28), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, value, value)).save(path)


def test_image_folder_with_explicit_splits(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for class_id, name in enumerate(("bag", "coat")):
            for i in range(n):
                _write_png(tmp_path / split / name / f"{i}.png", 10 * class_id + i + (0 if split == "train" else 100))
    dataset = load_image_folder(tmp_path)
    assert dataset.class_names == ("bag", "coat")
    assert dataset.x_train.shape == (6, 28, 28)
    assert dataset.x_test.shape == (4, 28, 28)
    assert sorted(dataset.y_train.tolist()) == [0, 0, 0, 1, 1, 1]
    validate_data(dataset)


def test_image_folder_converts_colour_and_size_and_splits_by_class(tmp_path):
    for class_id, name in enumerate(("a", "b")):
        for i in range(10):
            _write_png(tmp_path / name / f"{i}.jpg", 20 * class_id + i, size=(56, 40), mode="RGB")
    dataset = load_image_folder(tmp_path, test_fraction=0.2, seed=3)
    assert dataset.x_train.dtype == np.uint8
    assert dataset.x_train.shape[1:] == (28, 28)
    assert np.bincount(dataset.y_test).tolist() == [2, 2]
    assert np.bincount(dataset.y_train).tolist() == [8, 8]


def test_stratified_split_keeps_every_class():
    labels = np.repeat(np.arange(10), 50)
    keep, held = stratified_split(labels, 0.1, seed=0)
    assert len(set(keep) & set(held)) == 0
    assert len(keep) + len(held) == 500
    assert np.bincount(labels[held]).tolist() == [5] * 10


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__class__(d.x_train[:, :27], d.y_train, d.x_test, d.y_test), "N x 28 x 28"),
        (lambda d: d.__class__(d.x_train, d.y_train + 5, d.x_test, d.y_test), "out of range"),
        (lambda d: d.__class__(d.x_train, d.y_train % 9, d.x_test, d.y_test), "no examples of: Ankle boot"),
        (lambda d: d.__class__(d.x_train[:0], d.y_train[:0], d.x_test, d.y_test), "train split is empty"),
        (lambda d: d.__class__(d.x_train, d.y_train, d.x_test, d.y_test[:5]), "labels of shape"),
        (lambda d: d.__class__(d.x_train, d.y_train, d.x_train[:20], d.y_train[:20]), "leakage"),
    ],
)
def test_validation_rejects_broken_data(mutate, message):
    with pytest.raises(DataValidationError, match=message):
        validate_data(mutate(synthetic()))


def test_validation_names_nan_pixels():
    data = synthetic()
    x = data.x_train.astype(np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(DataValidationError, match="contain NaN"):
        validate_data(Dataset(x, data.y_train, data.x_test, data.y_test))


def test_valid_synthetic_data_passes_with_counts():
    counts = validate_data(synthetic())
    assert counts["train"][FASHION_MNIST_CLASSES[0]] == 4


def test_missing_data_says_where_it_looked_and_what_to_do(monkeypatch):
    from keras.datasets import fashion_mnist

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")

    monkeypatch.setattr(fashion_mnist, "load_data", offline)
    with pytest.raises(DataNotFound) as error:
        load_fashion_mnist(None)
    message = str(error.value)
    assert "MLOPS_DATA_DIR" in message
    assert "/usr/share/datasets/fashion-mnist" in message
    assert "dataset-fashion-mnist" in message
    assert "URL fetch failure" in message
    assert "\n" not in message
