"""Write the example inputs users send, made from the test split (never downloaded):
examples/images/: the first 10 test-split images of each class as the dataset's 28x28 PNGs;
examples/photos/: one garment per class as the engineered hold-out's photo-style files (catalogue
JPEG, transparent cutout PNG, small off-centre JPEG)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.slices import MAKERS
from tasks.settings import Settings

PHOTO_KINDS = {"catalogue": "jpg", "cutout": "png", "small_offcentre": "jpg"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("examples"))
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    images, photos = args.out / "images", args.out / "photos"
    images.mkdir(parents=True, exist_ok=True)
    photos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for class_id, name in enumerate(dataset.class_names):
        slug = "".join(ch if ch.isalnum() else "-" for ch in name).lower()
        indices = np.flatnonzero(dataset.y_test == class_id)
        for index in indices[: args.per_class]:
            Image.fromarray(dataset.x_test[index]).save(images / f"{slug}_{index:05d}.png", optimize=True)
        for kind, suffix in PHOTO_KINDS.items():
            data = MAKERS[kind](dataset.x_test[indices[0]], rng)
            (photos / f"{slug}_{indices[0]:05d}_{kind}.{suffix}").write_bytes(data)


if __name__ == "__main__":
    main()
