"""Real-photo accuracy of a running server: the test split sent as files the way shops and phones make
them (the engineered hold-out's slices, `tasks.evaluation.slices`) next to the dataset's own 28x28 PNGs, each file
one HTTP request to `--url`, as users send them. Loopback only; bounded by `--images` per kind.

Last line: photos: dataset=<acc> catalogue=<acc> ... worst_gap=<points below the dataset's own>
"""

from __future__ import annotations

import argparse
import urllib.request

import numpy as np
import orjson
from PIL import Image

from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.slices import SLICES, encode, slice_files
from tasks.settings import Settings

CONTENT_TYPES = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png"}


def classify(url: str, data: bytes) -> int:
    request = urllib.request.Request(url, data, {"Content-Type": CONTENT_TYPES[data[:2]]}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())["predictions"][0]["class_id"]


def dataset_files(x: np.ndarray, y: np.ndarray, size: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    chosen = np.sort(np.random.default_rng(seed).choice(len(x), size=size, replace=False))
    return [encode(Image.fromarray(x[index]), "PNG") for index in chosen], y[chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8080/models/clothes/latest")
    parser.add_argument("--images", type=int, default=500, help="test images per kind of file")
    parser.add_argument("--seed", type=int, default=1, help="not the pipeline's hold-out seed: other images")
    args = parser.parse_args()
    if not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        parser.error("loopback URLs only")
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir())
    x, y = dataset.x_test, dataset.y_test
    kinds = {"dataset": dataset_files(x, y, args.images, args.seed)}
    kinds.update({name: slice_files(name, x, y, args.images, args.seed) for name in SLICES})
    accuracy = {}
    for kind, (files, labels) in kinds.items():
        predicted = np.array([classify(args.url, data) for data in files])
        accuracy[kind] = float((predicted == labels).mean())
        print(f"{kind:<16} {accuracy[kind]:.4f}  ({len(files)} files)", flush=True)
    gap = max(accuracy["dataset"] - value for value in accuracy.values())
    print("photos: " + " ".join(f"{k}={v:.4f}" for k, v in accuracy.items()) + f" worst_gap={100 * gap:.1f}")


if __name__ == "__main__":
    main()
