"""Refuse data that would train a broken model, listing every problem at once."""

from __future__ import annotations

import hashlib

import numpy as np

from tasks.data.dataset import Dataset
from tasks.data.sources import DataValidationError


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
