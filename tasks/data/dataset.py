"""The in-memory dataset every stage passes around, and how a split is made."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

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
