"""Out-of-distribution benchmark: how well each evidence alone, and the shipped combination, tells
non-clothing inputs from garments, on a model of the default recipe trained here.

The model is trained with `TrainParams()` (or `--preset vgg`, `--epochs`), the detector fitted and
calibrated as the pipeline does it (`tasks.evaluation.ood.fit_detector`, on the training run's own
split). Each evidence alone is thresholded at 5% false flags on the validation split; the combination
uses the calibrated threshold. Judged on the test split, the test-made photo slices and `--size`
inputs per non-clothing source (`tasks.evaluation.ood_sources`). The last line is machine-readable:
ood: auroc=<x> detection=<mean over sources> test_flagged=<x> <source>=<rate> ...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from serving.models.ood import EVIDENCE
from tasks.data.dataset import stratified_split
from tasks.data.sources import load_fashion_mnist
from tasks.evaluation.ood import evidence_model, fit_detector, judge_detector, model_outputs
from tasks.evaluation.ood_sources import build_ood_slices
from tasks.evaluation.slices import PHOTO_SLICES, build_slices
from tasks.params import PRESETS, TrainParams
from tasks.settings import Settings
from tasks.training.train import train_model

EVIDENCES = ("top softmax probability", "largest logit", "feature distance", "texture distance")  # alone


def evidences(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(EVIDENCES, (-outputs["probabilities"].max(axis=1), *outputs[EVIDENCE].T), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("MLOPS_DATA_DIR"))
    parser.add_argument("--preset", choices=list(PRESETS), default="lenet5", help="the training recipe")
    parser.add_argument("--epochs", type=int, help="unset: the preset's")
    parser.add_argument("--size", type=int, default=300, help="inputs per non-clothing source")
    parser.add_argument("--seed", type=int, default=TrainParams().seed, help="the training seed (the model varies)")
    args = parser.parse_args()
    dataset = load_fashion_mnist(Settings().fashion_mnist_dir(args.data_dir))
    given = {"epochs": args.epochs} if args.epochs else {}
    params = TrainParams.model_validate({"preset": args.preset, "seed": args.seed, **given})
    model = train_model(dataset, params).model
    stats = fit_detector(model, dataset, params)
    evidence = evidence_model(model, stats)
    slices = build_slices(dataset.x_test, dataset.y_test, size=1000, seed=0)
    outliers = build_ood_slices(args.size, seed=0)

    _train, val_idx = stratified_split(dataset.y_train, params.validation_fraction, params.split_seed)
    reference = evidences(model_outputs(evidence, dataset.x_train[val_idx]))
    test = evidences(model_outputs(evidence, dataset.x_test))
    photos = {name: evidences(model_outputs(evidence, slices[name][0])) for name in PHOTO_SLICES}
    strange = {source: evidences(model_outputs(evidence, pixels)) for source, pixels in outliers.items()}
    sources = list(outliers)
    print(f"{'evidence':<26}{'test':>6}{'photos':>8} " + "".join(f"{s:>9}" for s in sources) + f"{'AUROC':>8}")
    for name in EVIDENCES:
        threshold = np.quantile(reference[name], 0.95)
        photo = max(float((photos[p][name] > threshold).mean()) for p in PHOTO_SLICES)
        rates = [float((strange[s][name] > threshold).mean()) for s in sources]
        everything = np.concatenate([strange[s][name] for s in sources])
        auroc = roc_auc_score(np.r_[np.zeros(len(test[name])), np.ones(len(everything))], np.r_[test[name], everything])
        print(
            f"{name:<26}{(test[name] > threshold).mean():>6.3f}{photo:>8.3f} "
            + "".join(f"{r:>9.2f}" for r in rates)
            + f"{auroc:>8.3f}"
        )
    report = judge_detector(stats, model, dataset.x_test, slices, outliers)
    worst_photo = max(rate for name, rate in report.flagged.items() if name != "test")
    print(
        f"{'combined (shipped)':<26}{report.flagged['test']:>6.3f}{worst_photo:>8.3f} "
        + "".join(f"{report.detected[s]:>9.2f}" for s in sources)
        + f"{report.auroc:>8.3f}"
    )
    print(
        f"{os.cpu_count()} cores; {params.preset}, {params.epochs} epochs, seed {args.seed}; "
        f"threshold {stats['threshold']:.3f} (combined); photos: the most flagged of {', '.join(PHOTO_SLICES)}; "
        f"{args.size} inputs per source"
    )
    metrics = report.metrics()
    print(
        f"ood: auroc={report.auroc:.4f} detection={metrics['ood.detection_rate']:.4f} "
        f"test_flagged={report.flagged['test']:.4f} worst_photo_flagged={worst_photo:.4f} "
        + " ".join(f"{s}={report.detected[s]:.3f}" for s in sources)
    )


if __name__ == "__main__":
    main()
