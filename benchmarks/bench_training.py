"""Training benchmark: the default training settings against a faster candidate, side by side in one
run on the full Fashion-MNIST training split, each judged as the pipeline's gates judge a model: test
accuracy and the engineered hold-out's slices (tasks/slices.py).

Default: `TrainParams()` (batch 128, Adam at 2e-3 cut by ReduceLROnPlateau, early stopping, at most 40
epochs). Candidate: one-cycle cosine schedule, batch 512, peak 1e-2, 16 epochs. Both use the
pipeline's own `train_model`, validation split and seed. The last line is machine-readable:
training: default_s=<s> candidate_s=<s> speedup=<x> default_accuracy=<acc> candidate_accuracy=<acc>
default_lighting=<acc> candidate_lighting=<acc>
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from serving.preprocessing import to_model_input
from tasks.holdout import evaluate_slices, slice_accuracies
from tasks.params import TrainParams
from tasks.settings import Settings
from tasks.slices import build_slices
from tasks.sources import load_fashion_mnist
from tasks.train import train_model

CANDIDATE = TrainParams(schedule="cosine", batch_size=512, learning_rate=1e-2, epochs=16)


def measure(name: str, dataset, slices, params: TrainParams) -> tuple[float, float, dict[str, float]]:
    started = time.perf_counter()
    result = train_model(dataset, params)
    seconds = time.perf_counter() - started
    accuracy = float(result.model.evaluate(to_model_input(dataset.x_test), dataset.y_test, verbose=0)[1])
    per_slice = slice_accuracies(evaluate_slices(result.model, slices, dataset.class_names))
    print(f"{name:<10} {result.epochs_run:>3} epochs {seconds:>7.1f} s  test accuracy {accuracy:.4f}  "
          f"batch {params.batch_size}, lr {params.learning_rate}, {params.schedule}", flush=True)  # fmt: skip
    print("           slices: " + ", ".join(f"{k} {v:.3f}" for k, v in per_slice.items()), flush=True)
    return seconds, accuracy, per_slice


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    slices = build_slices(dataset.x_test, dataset.y_test, size=1000, seed=0)
    candidate_s, candidate_acc, candidate_slices = measure("candidate", dataset, slices, CANDIDATE)
    default_s, default_acc, default_slices = measure("default", dataset, slices, TrainParams())
    print(f"{os.cpu_count()} cores, {len(dataset.x_train):,} training images (10% held for validation)")
    print(
        f"training: default_s={default_s:.1f} candidate_s={candidate_s:.1f} speedup={default_s / candidate_s:.2f} "
        f"default_accuracy={default_acc:.4f} candidate_accuracy={candidate_acc:.4f} "
        f"default_lighting={default_slices['lighting']:.3f} candidate_lighting={candidate_slices['lighting']:.3f}"
    )


if __name__ == "__main__":
    main()
