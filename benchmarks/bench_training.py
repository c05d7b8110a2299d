"""Training benchmark: the default training settings against the previous ones, side by side in one
run on the full Fashion-MNIST training split, each judged as the pipeline's gates judge a model: test
accuracy and the engineered hold-out's slices (tasks/evaluation/slices.py) against their floors.

Default: `TrainParams()` (cosine schedule, batch 512, peak 1.5e-2, 15 epochs, a fifth of the images
relit). Previous: batch 128, Adam at 2e-3 cut by ReduceLROnPlateau, early stopping, at most 40 epochs,
no relighting. Both use the pipeline's own `train_model`, validation split and seed. The last line is
machine-readable:
training: default_s=<s> previous_s=<s> speedup=<x> default_accuracy=<acc> previous_accuracy=<acc>
default_lighting=<acc> previous_lighting=<acc> default_slices=<pass|fail: names>
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from serving.preprocessing import to_model_input
from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.holdout import accuracy_of, evaluate_slices
from tasks.evaluation.slices import build_slices
from tasks.params import SLICE_FLOORS, TrainParams
from tasks.settings import Settings
from tasks.training.train import train_model

PREVIOUS = TrainParams(schedule="plateau", batch_size=128, learning_rate=2e-3, epochs=40, relight=0.0)


def measure(name: str, dataset, slices, params: TrainParams) -> tuple[float, float, dict[str, float]]:
    started = time.perf_counter()
    result = train_model(dataset, params)
    seconds = time.perf_counter() - started
    accuracy = float(result.model.evaluate(to_model_input(dataset.x_test), dataset.y_test, verbose=0)[1])
    per_slice = accuracy_of(evaluate_slices(result.model, slices, dataset.class_names)[1])
    print(f"{name:<10} {result.epochs_run:>3} epochs {seconds:>7.1f} s  test accuracy {accuracy:.4f}  "
          f"batch {params.batch_size}, lr {params.learning_rate}, {params.schedule}, relight {params.relight}",
          flush=True)  # fmt: skip
    print("           slices: " + ", ".join(f"{k} {v:.3f}" for k, v in per_slice.items()), flush=True)
    return seconds, accuracy, per_slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    slices = build_slices(dataset.x_test, dataset.y_test, size=1000, seed=0)
    default_s, default_acc, default_slices = measure("default", dataset, slices, TrainParams())
    previous_s, previous_acc, previous_slices = measure("previous", dataset, slices, PREVIOUS)
    print(f"{os.cpu_count()} cores, {len(dataset.x_train):,} training images (10% held for validation)")
    below = [name for name, floor in SLICE_FLOORS.items() if default_slices[name] < floor]
    print(
        f"training: default_s={default_s:.1f} previous_s={previous_s:.1f} speedup={previous_s / default_s:.2f} "
        f"default_accuracy={default_acc:.4f} previous_accuracy={previous_acc:.4f} "
        f"default_lighting={default_slices['lighting']:.3f} previous_lighting={previous_slices['lighting']:.3f} "
        f"default_slices={'fail: ' + ','.join(below) if below else 'pass'}"
    )


if __name__ == "__main__":
    main()
