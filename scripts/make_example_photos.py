"""Write examples/photos/: a few test-split garments as the photo-style files of the engineered hold-out
(catalogue JPEG, transparent cutout PNG, small off-centre JPEG), made from the data, never downloaded."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tasks.settings import Settings
from tasks.slices import MAKERS
from tasks.sources import load_fashion_mnist

KINDS = {"catalogue": "jpg", "cutout": "png", "small_offcentre": "jpg"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("examples/photos"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for class_id, name in enumerate(dataset.class_names):
        slug = "".join(ch if ch.isalnum() else "-" for ch in name).lower()
        index = int(np.flatnonzero(dataset.y_test == class_id)[0])
        for kind, suffix in KINDS.items():
            data = MAKERS[kind](dataset.x_test[index], rng)
            (args.out / f"{slug}_{index:05d}_{kind}.{suffix}").write_bytes(data)


if __name__ == "__main__":
    main()
