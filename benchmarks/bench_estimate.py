"""Label-free accuracy estimate benchmark: each estimator's error against the true accuracy on shifted
copies of the test split (`tasks.evaluation.shifts`), side by side with NannyML's multiclass CBPE.

A model of the default recipe is trained here (`--seed`), calibrated and given its estimator
statistics exactly as the pipeline does (on the training run's validation split). Each shift (the
photo slices read through the server's conversion) is answered by the model and estimated without its
labels; beside it, the share the out-of-distribution flag catches (the monitor's own signal for inputs
that are not clothing, `max_ood_share` 0.15). NannyML runs in its own environment (`--nannyml`, made by
`make bench-estimate`) on the same probabilities, fitted on the same validation split. The last line
is machine-readable:
estimate: shifts=<n> default=<name> mae=<x> worst=<x>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from serving.models.ood import SCORE
from tasks.data.dataset import stratified_split
from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.estimate import DEFAULT, ESTIMATORS, Answers, estimates, fit_estimators
from tasks.evaluation.ood import fit_detector, model_outputs, scoring_model
from tasks.evaluation.shifts import build_shifts, kind, true_accuracy
from tasks.params import TrainParams
from tasks.settings import Settings
from tasks.training.calibration import fit_calibration
from tasks.training.train import train_model

PEER = "nannyml_cbpe"
MILD = 0.8  # shifts that cost at most ~11 points: where an estimate decides whether to worry


def answers_of(scoring, pixels: np.ndarray) -> tuple[Answers, np.ndarray]:
    """The answers, and the out-of-distribution scores, as the exported model computes both."""
    outputs = model_outputs(scoring, pixels)
    return Answers.of(outputs["probabilities"]), outputs[SCORE]


def nannyml(python: Path, reference: Answers, labels: np.ndarray, shifts: dict[str, Answers]) -> dict[str, float]:
    """NannyML's CBPE estimates, shift -> accuracy, from its own interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shifts.npz"
        arrays = {f"shift:{name}": a.probabilities for name, a in shifts.items()}
        np.savez(path, reference_probabilities=reference.probabilities, reference_labels=labels, **arrays)
        script = Path(__file__).with_name("nannyml_cbpe.py")
        done = subprocess.run([str(python), str(script), str(path)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"NannyML {result['nannyml']} (its own environment: {python})")
    return result["estimates"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    parser.add_argument("--seed", type=int, default=TrainParams().seed, help="the training seed (the model varies)")
    parser.add_argument("--epochs", type=int, help="unset: the default recipe's")
    parser.add_argument("--size", type=int, default=2000, help="images per shift (the slices: half)")
    parser.add_argument("--nannyml", type=Path, help="NannyML's interpreter; unset: the peer is left out")
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    params = TrainParams.model_validate({"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})})
    started = time.perf_counter()
    model = train_model(dataset, params).model
    calibration = fit_calibration(model, dataset, params)
    detector = fit_detector(model, dataset, params)
    scoring = scoring_model(model, detector)
    _train, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    validation, _scores = answers_of(scoring, dataset.x_train[val_idx])
    test, _scores = answers_of(scoring, dataset.x_test)
    fitted = fit_estimators(validation, dataset.y_train[val_idx], true_accuracy(test.predicted, dataset.y_test))
    print(
        f"model: {params.preset}, {params.epochs} epochs, seed {args.seed}, trained and fitted in "
        f"{time.perf_counter() - started:.0f} s; temperature {calibration.temperature:.3f}, test ECE "
        f"{calibration.before['test_ece']:.4f} -> {calibration.after['test_ece']:.4f}; "
        f"test accuracy {fitted.test_accuracy:.4f}"
    )

    shifts = build_shifts(dataset.x_test, dataset.y_test, args.size, seed=0)
    answered, flagged = {}, {}
    for name, (pixels, _labels) in shifts.items():
        answered[name], scores = answers_of(scoring, pixels)
        flagged[name] = float((scores > detector["threshold"]).mean())
    truth = {name: true_accuracy(answered[name].predicted, labels) for name, (_pixels, labels) in shifts.items()}
    found = {name: estimates(fitted, answers) for name, answers in answered.items()}
    columns = list(ESTIMATORS)
    if args.nannyml:
        for name, value in nannyml(args.nannyml, validation, dataset.y_train[val_idx], answered).items():
            found[name][PEER] = value
        columns.append(PEER)

    print(f"{'shift':<28}{'n':>6}{'flagged':>8}{'truth':>8}" + "".join(f"{c:>20}" for c in columns))
    for name in shifts:
        print(
            f"{name:<28}{len(answered[name]):>6}{flagged[name]:>8.3f}{truth[name]:>8.3f}"
            + "".join(f"{found[name][c]:>20.3f}" for c in columns)
        )
    errors = {c: np.array([abs(found[n][c] - truth[n]) for n in shifts]) for c in columns}
    worst = {c: list(shifts)[int(np.argmax(errors[c]))] for c in columns}
    print(f"{'mean absolute error':<50}" + "".join(f"{errors[c].mean():>20.3f}" for c in columns))
    print(f"{'worst absolute error':<50}" + "".join(f"{errors[c].max():>20.3f}" for c in columns))
    print(f"{'worst shift':<50}" + "".join(f"{worst[c][:19]:>20}" for c in columns))
    order = list(shifts)
    groups = {k: [n for n in shifts if kind(n) == k] for k in sorted({kind(n) for n in shifts})}
    groups[f"true accuracy >= {MILD}"] = [n for n in shifts if truth[n] >= MILD]
    for group, names in groups.items():
        at = [order.index(n) for n in names]
        print(
            f"{'  ' + group + f' ({len(names)}): mean, worst':<50}"
            + "".join(f"{errors[c][at].mean():>13.3f}{errors[c][at].max():>7.3f}" for c in columns)
        )
    print(f"{os.cpu_count()} cores; {args.size} images per shift, {args.size // 2} per slice; default {DEFAULT}")
    print(
        f"estimate: shifts={len(shifts)} default={DEFAULT} mae={errors[DEFAULT].mean():.4f} "
        f"worst={errors[DEFAULT].max():.4f}" + (f" {PEER}_mae={errors[PEER].mean():.4f}" if args.nannyml else "")
    )


if __name__ == "__main__":
    main()
