"""Training benchmark: the default training settings against the previous ones, side by side in one
run on the full Fashion-MNIST training split, each scored on the 10,000 test images.

Previous: batch 128, Adam at 2e-3 cut by ReduceLROnPlateau, early stopping, at most 40 epochs.
Default: whatever `TrainParams()` says now (see tasks/params.py). Both use the pipeline's own
`train_model`, validation split and seed. The last line is machine-readable:
training: previous_s=<s> default_s=<s> speedup=<x> previous_accuracy=<acc> default_accuracy=<acc>
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from serving.preprocessing import to_model_input
from tasks.params import TrainParams
from tasks.settings import Settings
from tasks.sources import load_fashion_mnist
from tasks.train import train_model

PREVIOUS = TrainParams(schedule="plateau", batch_size=128, learning_rate=2e-3, epochs=40)


def measure(name: str, dataset, params: TrainParams) -> tuple[float, float]:
    started = time.perf_counter()
    result = train_model(dataset, params)
    seconds = time.perf_counter() - started
    accuracy = float(result.model.evaluate(to_model_input(dataset.x_test), dataset.y_test, verbose=0)[1])
    print(f"{name:<9} {result.epochs_run:>3} epochs {seconds:>7.1f} s  test accuracy {accuracy:.4f}  "
          f"({params.batch_size=}, {params.learning_rate=}, {params.schedule=})", flush=True)  # fmt: skip
    return seconds, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    default_s, default_acc = measure("default", dataset, TrainParams())
    previous_s, previous_acc = measure("previous", dataset, PREVIOUS)
    print(f"{os.cpu_count()} cores, {len(dataset.x_train):,} training images (10% held for validation)")
    print(
        f"training: previous_s={previous_s:.1f} default_s={default_s:.1f} speedup={previous_s / default_s:.2f} "
        f"previous_accuracy={previous_acc:.4f} default_accuracy={default_acc:.4f}"
    )


if __name__ == "__main__":
    main()
