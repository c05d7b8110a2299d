"""Training benchmark: the default recipe against the previous default, side by side in one run on the
full Fashion-MNIST training split, over several seeds, each model judged as the pipeline's gates judge
it: test accuracy and the engineered hold-out's slices (tasks/evaluation/slices.py) against their floors.

Default: `TrainParams()` (LeNet-5 with its 32x32 input, cosine schedule, batch 512, 9 epochs over the
training images plus a rotated and shifted copy of three quarters of them, a fifth of them relit, the
input standardised). Previous: the same without the moved copies, the standardisation and the input's
padding (28x28 into the first convolution), 15 epochs. `--vgg` also trains
the `vgg` preset with each seed (tasks/params.py: two 3x3 convolutions per block, flips, bfloat16), and
`--vgg-float32` the preset without bfloat16 (what a CPU without bfloat16 units should run); how fast
bfloat16 is depends on the CPU's units, which the run prints (AMX, AVX512-BF16).
All use the pipeline's own `train_model` and validation split. The last line is machine-readable:
training: seeds=<n> default_s=<mean s> previous_s=<mean s> time_ratio=<x> default_mean=<acc>
default_min=<acc> previous_mean=<acc> previous_min=<acc> default_rotation=<acc> previous_rotation=<acc>
default_slices=<pass|fail: names> [vgg_s=<mean s> vgg_ratio=<x of default>
vgg_mean=<acc> vgg_min=<acc> vgg_rotation=<acc>] [vgg_float32_s=<mean s> vgg_float32_ratio=<x of default>]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from serving.preprocessing import to_model_input
from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.holdout import accuracy_of, evaluate_slices
from tasks.evaluation.slices import build_slices
from tasks.params import SLICE_FLOORS, Architecture, TrainParams
from tasks.settings import Settings
from tasks.training.train import train_model

PREVIOUS = {"epochs": 15, "moved_copies": 0.0, "architecture": Architecture(standardise=False, input_padding=0)}


def measure(name: str, dataset, slices, params: TrainParams) -> tuple[float, float, dict[str, float]]:
    started = time.perf_counter()
    result = train_model(dataset, params)
    seconds = time.perf_counter() - started
    accuracy = float(result.model.evaluate(to_model_input(dataset.x_test), dataset.y_test, verbose=0)[1])
    per_slice = accuracy_of(evaluate_slices(result.model, slices, dataset.class_names)[1])
    print(
        f"{name:<10} {result.epochs_run:>3} epochs {seconds:>7.1f} s  test accuracy {accuracy:.4f}  "
        f"moved copies {params.moved_copies}, relight {params.relight}",
        flush=True,
    )
    print("           slices: " + ", ".join(f"{k} {v:.3f}" for k, v in per_slice.items()), flush=True)
    return seconds, accuracy, per_slice


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((set(line.split(":", 1)[1].split()) for line in cpuinfo if line.startswith("flags")), set())


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "unknown")


def bfloat16_units() -> list[str]:
    """What makes bfloat16 training fast (oneDNN): Intel's AMX tiles, else AVX512's bfloat16 dot products."""
    return [unit for unit in ("amx_bf16", "avx512_bf16") if unit in cpu_flags()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 11])
    parser.add_argument("--vgg", action="store_true", help="also train the vgg preset (2.6-8x the default's time)")
    parser.add_argument("--vgg-float32", action="store_true", help="also train the vgg preset without bfloat16")
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    slices = build_slices(dataset.x_test, dataset.y_test, size=1000, seed=0)
    runs: dict[str, list[tuple[float, float, dict[str, float]]]] = {"default": [], "previous": []}
    if args.vgg:
        runs["vgg"] = []
    if args.vgg_float32:
        runs["vgg_float32"] = []
    print(f"CPU: {cpu_model()}; bfloat16 units: {', '.join(bfloat16_units()) or 'none'}", flush=True)
    for seed in args.seeds:  # interleaved, so a machine slowing down mid-run weighs on both alike
        runs["default"].append(measure(f"default/{seed}", dataset, slices, TrainParams(seed=seed)))
        runs["previous"].append(measure(f"previous/{seed}", dataset, slices, TrainParams(seed=seed, **PREVIOUS)))
        if args.vgg:
            runs["vgg"].append(measure(f"vgg/{seed}", dataset, slices, TrainParams(preset="vgg", seed=seed)))
        if args.vgg_float32:
            float32 = TrainParams(preset="vgg", seed=seed, mixed_precision=False)
            runs["vgg_float32"].append(measure(f"vgg-f32/{seed}", dataset, slices, float32))
    print(f"{os.cpu_count()} cores, {len(dataset.x_train):,} training images (10% held for validation)")
    seconds = {name: float(np.mean([r[0] for r in results])) for name, results in runs.items()}
    accuracy = {name: [r[1] for r in results] for name, results in runs.items()}
    rotation = {name: float(np.mean([r[2]["rotation_shift"] for r in results])) for name, results in runs.items()}
    below = sorted({name for r in runs["default"] for name, floor in SLICE_FLOORS.items() if r[2][name] < floor})
    for name in runs:
        mean_slices = {k: np.mean([r[2][k] for r in runs[name]]) for k in runs[name][0][2]}
        print(
            f"{name:<9} mean over {len(args.seeds)} seeds: {seconds[name]:.1f} s, test accuracy mean "
            f"{np.mean(accuracy[name]):.4f} min {np.min(accuracy[name]):.4f}; slices "
            + ", ".join(f"{k} {v:.3f}" for k, v in mean_slices.items())
        )
    vgg_figures = (
        f" vgg_s={seconds['vgg']:.1f} vgg_ratio={seconds['vgg'] / seconds['default']:.2f} "
        f"vgg_mean={np.mean(accuracy['vgg']):.4f} vgg_min={np.min(accuracy['vgg']):.4f} "
        f"vgg_rotation={rotation['vgg']:.3f}"
        if args.vgg
        else ""
    )
    if args.vgg_float32:
        vgg_figures += (
            f" vgg_float32_s={seconds['vgg_float32']:.1f} "
            f"vgg_float32_ratio={seconds['vgg_float32'] / seconds['default']:.2f}"
        )
    print(
        f"training: seeds={len(args.seeds)} default_s={seconds['default']:.1f} previous_s={seconds['previous']:.1f} "
        f"time_ratio={seconds['default'] / seconds['previous']:.2f} "
        f"default_mean={np.mean(accuracy['default']):.4f} default_min={np.min(accuracy['default']):.4f} "
        f"previous_mean={np.mean(accuracy['previous']):.4f} previous_min={np.min(accuracy['previous']):.4f} "
        f"default_rotation={rotation['default']:.3f} previous_rotation={rotation['previous']:.3f} "
        f"default_slices={'fail: ' + ','.join(below) if below else 'pass'}{vgg_figures}"
    )


if __name__ == "__main__":
    main()
