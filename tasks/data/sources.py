"""Readers for each place training data comes from: the official IDX files, Keras' own loader, image
folders, and the labelled samples monitoring collects from feedback."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from serving.preprocessing import load_image_file
from tasks.data.dataset import Dataset, stratified_split
from tasks.settings import DATA_CANDIDATES, IDX_FILES

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
}


class DataValidationError(ValueError):
    """The data would train a broken model; the message says exactly why."""


class DataNotFound(FileNotFoundError):
    """No configured place holds the data; the message lists where it looked and what to do."""


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip-compressed or raw), the format of the official MNIST-style files."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataValidationError(f"{path}: damaged gzip file ({exc or type(exc).__name__}); fetch it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataValidationError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise DataValidationError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_end != expected:
        raise DataValidationError(
            f"{path}: header says {shape} ({expected} bytes) but the file holds {len(raw) - header_end}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_directory(directory: Path) -> Dataset:
    missing = [name for name in IDX_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks the Fashion-MNIST files: {', '.join(missing)}")
    arrays = {key: read_idx(directory / name) for key, name in IDX_FILES.items()}
    return Dataset(
        arrays["x_train"],
        arrays["y_train"].astype(np.int64),
        arrays["x_test"],
        arrays["y_test"].astype(np.int64),
        source=str(directory.resolve()),
    )


def load_keras_fashion_mnist() -> Dataset:
    """Keras' own loader: downloads once into ~/.keras/datasets (or $KERAS_HOME), then reads offline."""
    from keras.datasets import fashion_mnist

    try:
        (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    except Exception as exc:  # offline: Keras raises a bare "URL fetch failure"
        places = ", ".join(str(p) for p in DATA_CANDIDATES)
        raise DataNotFound(
            f"Fashion-MNIST not found: MLOPS_DATA_DIR is unset, {places} lack the four IDX files, and Keras' "
            f"download failed ({exc}). Set MLOPS_DATA_DIR to a directory holding {', '.join(IDX_FILES.values())}, "
            "or install Debian's dataset-fashion-mnist, or allow the download once"
        ) from None
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist"
    return Dataset(
        x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), source=str(cache), origin="keras"
    )


def load_fashion_mnist(directory: Path | None) -> Dataset:
    """The IDX files in `directory`; None: Keras' loader (downloads once into $KERAS_HOME)."""
    return load_keras_fashion_mnist() if directory is None else load_idx_directory(directory)


def _read_class_folders(root: Path, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for class_id, name in enumerate(class_names):
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(load_image_file(str(path)))
                labels.append(class_id)
    if not images:
        return np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.int64)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def load_image_folder(root: Path, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """`root/<class_name>/*.png|jpg`, or `root/{train,test}/<class_name>/...` with a fixed test split.

    Class ids follow sorted folder names, so the same folder always maps to the same ids.
    """
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        class_names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
        x_train, y_train = _read_class_folders(root / "train", class_names)
        x_test, y_test = _read_class_folders(root / "test", class_names)
    else:
        class_names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
        if not class_names:
            raise DataValidationError(f"{root}: no class folders (expected root/<class_name>/*.png)")
        x, y = _read_class_folders(root, class_names)
        train_idx, test_idx = stratified_split(y, test_fraction, seed)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    return Dataset(x_train, y_train, x_test, y_test, class_names, source=str(root.resolve()), origin="image-folder")


def add_labelled_samples(dataset: Dataset, root: Path) -> Dataset:
    """Append `root/<class_id>/*.png` (what monitoring collects from feedback) to the training split."""
    folders = [p for p in Path(root).iterdir() if p.is_dir()]
    bad = [p.name for p in folders if not p.name.isdigit() or int(p.name) >= len(dataset.class_names)]
    if bad:
        raise DataValidationError(f"{root}: folders must be class ids 0..{len(dataset.class_names) - 1}, got {bad}")
    images, labels = [], []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(load_image_file(str(path)))
                labels.append(int(folder.name))
    if not images:
        return dataset
    return replace(
        dataset,
        x_train=np.concatenate([dataset.x_train, np.stack(images)]),
        y_train=np.concatenate([dataset.y_train, np.asarray(labels, dtype=dataset.y_train.dtype)]),
    )
