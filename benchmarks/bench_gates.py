"""Do the gates judge by statistics? The default recipe is trained with the champion's seed and with
several other seeds on the full Fashion-MNIST split, and each other seed is judged against the champion
exactly as the pipeline judges a candidate (test split and the engineered hold-out's slices, paired
McNemar tests with Holm's correction at the default false-rejection rate, plus the absolute floors).
Clearly worse candidates must still be rejected: the default recipe stopped after 3 epochs, and the
champion itself with 5% of one slice's right answers turned wrong.

The last line is machine-readable:
gates: same_recipe_rejected=<k>/<n> worse_rejected=<k>/<n> seconds=<s>
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.gates import TEST, ChampionScore, Evidence, check_gates, failed_gates
from tasks.evaluation.holdout import correct_answers
from tasks.evaluation.metrics import compute_metrics, predict_probabilities
from tasks.evaluation.slices import build_slices
from tasks.params import GateThresholds, ModelRef, TrainParams
from tasks.settings import Settings
from tasks.training.train import train_model


def correctness(model, dataset, slices) -> tuple[object, dict[str, np.ndarray]]:
    """What the pipeline gives the gates for a candidate: its test-split metrics and its right answers."""
    predicted = predict_probabilities(model, dataset.x_test).argmax(axis=1)
    return compute_metrics(dataset.y_test, predicted, dataset.class_names), correct_answers(model, dataset, slices)


def judge(name: str, evaluation, correct: dict[str, np.ndarray], champion: ChampionScore) -> bool:
    failed = failed_gates(check_gates(Evidence(evaluation, correct), GateThresholds(), champion))
    verdict = "REJECTED: " + "; ".join(f"{r.name}: {r.detail}" for r in failed) if failed else "passed"
    print(f"{name:<18} test {correct[TEST].mean():.4f}  {verdict}", flush=True)
    return bool(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 12, 13, 14])
    args = parser.parse_args()
    started = time.perf_counter()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    slices = build_slices(dataset.x_test, dataset.y_test, size=1000, seed=42)
    champion_evaluation, champion_correct = correctness(train_model(dataset, TrainParams()).model, dataset, slices)
    champion = ChampionScore(ModelRef("clothes", 1), champion_correct)
    print(f"champion (seed 42) test {champion.accuracy:.4f}", flush=True)
    same = [
        judge(
            f"seed {seed}", *correctness(train_model(dataset, TrainParams(seed=seed)).model, dataset, slices), champion
        )
        for seed in args.seeds
    ]
    short = train_model(dataset, TrainParams(epochs=3)).model
    worse = [judge("3 epochs", *correctness(short, dataset, slices), champion)]
    for name in [n for n in champion_correct if n != TEST]:
        hurt = {n: hits.copy() for n, hits in champion_correct.items()}
        right = np.flatnonzero(hurt[name])
        hurt[name][right[: len(hurt[name]) // 20]] = False  # 5 points of the slice lost
        worse.append(judge(f"-5 pts {name}", champion_evaluation, hurt, champion))  # the test split as it was
    print(
        f"gates: same_recipe_rejected={sum(same)}/{len(same)} worse_rejected={sum(worse)}/{len(worse)} "
        f"seconds={time.perf_counter() - started:.0f}"
    )


if __name__ == "__main__":
    main()
