"""Load Fashion-MNIST (Keras, a local IDX directory, or an image folder) and refuse data that would
train a broken model."""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from serving.preprocessing import load_image_file
from tasks.settings import DEBIAN_DATA_DIR

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4")}


class DataValidationError(ValueError):
    """The data would train a broken model; the message says exactly why."""


@dataclass(frozen=True)
class Dataset:
    """Images as (N, 28, 28) uint8 pixels 0-255, labels as int class ids."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = FASHION_MNIST_CLASSES
    source: str = ""  # directory the data was read from
    origin: str = "idx"  # idx | image-folder | keras

    @property
    def digest(self) -> str:
        """Content hash: the same images and labels give the same digest whatever their source."""
        sha = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            contiguous = np.ascontiguousarray(array)
            sha.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
            sha.update(contiguous.tobytes())
        sha.update("|".join(self.class_names).encode())
        return sha.hexdigest()

    def class_counts(self) -> dict[str, dict[str, int]]:
        n = len(self.class_names)
        return {
            split: dict(zip(self.class_names, np.bincount(labels, minlength=n).tolist(), strict=True))
            for split, labels in (("train", self.y_train), ("test", self.y_test))
        }

    def subset(self, train_limit: int | None, test_limit: int | None) -> Dataset:
        """First N examples of each split: Fashion-MNIST's order is already class-balanced."""
        return replace(
            self,
            x_train=self.x_train[:train_limit],
            y_train=self.y_train[:train_limit],
            x_test=self.x_test[:test_limit],
            y_test=self.y_test[:test_limit],
        )


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

    (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist"
    return Dataset(
        x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), source=str(cache), origin="keras"
    )


def fashion_mnist_directory(data_dir: Path | None = None) -> Path | None:
    """An explicit directory wins, then Debian's `dataset-fashion-mnist` package; None means Keras."""
    if data_dir is not None:
        return Path(data_dir)
    if all((DEBIAN_DATA_DIR / name).is_file() for name in IDX_FILES.values()):
        return DEBIAN_DATA_DIR
    return None


def load_fashion_mnist(data_dir: Path | None = None) -> Dataset:
    directory = fashion_mnist_directory(data_dir)
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


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with `fraction` of every class held out, so no class goes missing."""
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for class_id in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == class_id))
        n_held = round(len(idx) * fraction)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def validate_data(dataset: Dataset) -> dict[str, dict[str, int]]:
    """Raise DataValidationError listing every problem; return per-class counts when the data is sound."""
    problems: list[str] = []
    n_classes = len(dataset.class_names)
    if n_classes < 2:
        problems.append(f"need at least 2 classes, got {n_classes}")
    splits = (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test))
    for split, x, y in splits:
        if len(x) == 0:
            problems.append(f"{split} split is empty")
            continue
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            problems.append(f"{split} images must be N x 28 x 28, got {list(x.shape)}")
        if x.dtype != np.uint8:
            if np.issubdtype(x.dtype, np.floating) and np.isnan(x).any():
                problems.append(f"{split} images contain NaN")
            problems.append(f"{split} images must be uint8 pixels 0-255, got {x.dtype}")
        if y.ndim != 1 or len(y) != len(x):
            problems.append(f"{split} has {len(x)} images but labels of shape {list(y.shape)}")
            continue
        if not np.issubdtype(y.dtype, np.integer):
            problems.append(f"{split} labels must be integers, got {y.dtype}")
            continue
        out_of_range = (y < 0) | (y >= n_classes)
        if out_of_range.any():
            bad = sorted(set(y[out_of_range].tolist()))[:5]
            problems.append(f"{split} labels out of range 0..{n_classes - 1}: {bad}")
            continue
        missing = [dataset.class_names[c] for c in range(n_classes) if not (y == c).any()]
        if missing:
            problems.append(f"{split} split has no examples of: {', '.join(missing)}")
    if not problems and _shared_images(dataset.x_train, dataset.x_test):
        problems.append("train and test splits share identical images (test leakage)")
    if problems:
        raise DataValidationError("invalid data: " + "; ".join(problems))
    return dataset.class_counts()


def _shared_images(x_train: np.ndarray, x_test: np.ndarray) -> bool:
    """Exact duplicates across splits; all-blank images are ignored (they carry no identity)."""

    def hashes(x: np.ndarray) -> set[bytes]:
        flat = x.reshape(len(x), -1)
        return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat if row.any()}

    return not hashes(x_train).isdisjoint(hashes(x_test))


class DataSpec(BaseModel):
    """Where the training data comes from; `path` unset means MLOPS_DATA_DIR, Debian's package, Keras."""

    source: Literal["fashion-mnist", "image-folder"] = "fashion-mnist"
    path: Path | None = None
    train_limit: int | None = Field(default=None, ge=1, description="first N training images (quick runs)")
    test_limit: int | None = Field(default=None, ge=1, description="first N test images")
    extra_path: Path | None = Field(
        default=None, description="labelled samples root/<class_id>/*.png added to the training split (feedback)"
    )


def load_dataset(spec: DataSpec, default_dir: Path | None = None) -> Dataset:
    if spec.source == "image-folder":
        if spec.path is None:
            raise ValueError("the image-folder source needs a path")
        dataset = load_image_folder(spec.path)
    else:
        dataset = load_fashion_mnist(spec.path or default_dir)
    dataset = dataset.subset(spec.train_limit, spec.test_limit)
    return add_labelled_samples(dataset, spec.extra_path) if spec.extra_path else dataset


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


def source_files(spec: DataSpec, default_dir: Path | None = None) -> list[Path] | None:
    """The files a load reads, or None when they are not known up front (Keras' download)."""
    if spec.source == "image-folder":
        if spec.path is None:
            return None
        return sorted(p for p in Path(spec.path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    directory = fashion_mnist_directory(spec.path or default_dir)
    return None if directory is None else [directory / name for name in IDX_FILES.values()]


def data_cache_key(spec: DataSpec, default_dir: Path | None = None) -> str | None:
    """Content digest of the source files plus the load parameters: new data or new limits, new key."""
    files = source_files(spec, default_dir)
    if not files or not all(f.is_file() for f in files) or spec.extra_path is not None:
        return None  # unknown sources (Keras download) and feedback samples are never cached
    sha = hashlib.sha256(spec.model_dump_json().encode())
    for path in files:
        sha.update(str(path.name).encode())
        with path.open("rb") as handle:
            sha.update(hashlib.file_digest(handle, "sha256").digest())
    return f"fashion-data-{sha.hexdigest()}"


@task(
    name="load-data",
    cache_key_fn=lambda _context, parameters: data_cache_key(parameters["spec"], parameters.get("default_dir")),
    cache_expiration=timedelta(days=30),
    persist_result=True,
)
def load_data_task(spec: DataSpec, default_dir: Path | None = None) -> Dataset:
    dataset = load_dataset(spec, default_dir)
    get_run_logger().info(
        "loaded %d train / %d test images (%s) from %s",
        len(dataset.y_train),
        len(dataset.y_test),
        dataset.origin,
        dataset.source,
    )
    return dataset


@task(name="validate-data", cache_policy=NO_CACHE)
def validate_data_task(dataset: Dataset) -> dict[str, dict[str, int]]:
    counts = validate_data(dataset)
    get_run_logger().info("data is valid; digest %s", dataset.digest[:12])
    return counts
