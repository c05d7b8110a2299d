"""Write examples/images/: the first 10 test-split images of each class as PNG (what users send)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.settings import Settings
from tasks.sources import load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("examples/images"))
    parser.add_argument("--per-class", type=int, default=10)
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    for class_id, name in enumerate(dataset.class_names):
        slug = "".join(ch if ch.isalnum() else "-" for ch in name).lower()
        for index in np.flatnonzero(dataset.y_test == class_id)[: args.per_class]:
            Image.fromarray(dataset.x_test[index]).save(args.out / f"{slug}_{index:05d}.png", optimize=True)


if __name__ == "__main__":
    main()
