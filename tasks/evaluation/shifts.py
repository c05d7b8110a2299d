"""Shifted copies of the test split with known accuracy, for measuring the label-free accuracy estimate
(`tasks.evaluation.estimate`, `make bench-estimate`): the engineered slices, each kind of disturbance at
several strengths, class-prior shifts and mixtures with inputs that are not clothing (label -1: no
answer is right for them). Deterministic for a seed."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from tasks.data.transforms import moved
from tasks.evaluation.ood_sources import build_ood_slices
from tasks.evaluation.slices import SLICES, build_slices

Shift = tuple[np.ndarray, np.ndarray]  # (N, 28, 28) uint8 pixels, labels (-1: not clothing)
NOT_CLOTHING = -1


def rotated(degrees: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(moved(pixels, float(rng.choice([-1, 1]) * degrees), 0, 0))

    return apply


def translated(step: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dx, dy = (int(v) for v in rng.choice([-step, 0, step], 2))
        return np.asarray(moved(pixels, 0.0, dx or step, dy))

    return apply


def noisy(sigma: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(pixels + rng.normal(0, sigma, pixels.shape), 0, 255).astype(np.uint8)

    return apply


def blurred(radius: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(float(radius))))

    return apply


def contrasted(factor: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Contrast around mid-grey: the background lifts, the garment dims."""

    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(128 + (pixels.astype(np.float64) - 128) * factor, 0, 255).astype(np.uint8)

    return apply


def combined(*steps: Callable) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            pixels = step(pixels, rng)
        return pixels

    return apply


DISTURBANCES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    **{f"rotation_{d}": rotated(d) for d in (10, 20, 30, 45)},
    **{f"translation_{s}px": translated(s) for s in (2, 4, 6)},
    **{f"noise_sigma{s}": noisy(s) for s in (25, 50, 100)},
    **{f"blur_{r}": blurred(r) for r in (0.7, 1.2, 2.0)},
    **{f"contrast_{f}": contrasted(f) for f in (0.6, 0.4, 0.25)},
    "rotation_20+noise_sigma50": combined(rotated(20), noisy(50)),
}
MIXTURES = (0.1, 0.25, 0.5)  # shares of non-clothing inputs
PRIOR_FACTOR = 5  # one class this many times more frequent


def disturbed(x: np.ndarray, y: np.ndarray, name: str, size: int, seed: int) -> Shift:
    rng = np.random.default_rng([seed, list(DISTURBANCES).index(name)])
    chosen = rng.choice(len(x), size=min(size, len(x)), replace=False)
    return np.stack([DISTURBANCES[name](x[i], rng) for i in chosen]), y[chosen]


def prior_shifted(x: np.ndarray, y: np.ndarray, favoured: int, size: int, seed: int) -> Shift:
    """`size` images drawn with class `favoured` PRIOR_FACTOR times as likely as each other class."""
    rng = np.random.default_rng([seed, 100 + favoured])
    weights = np.where(y == favoured, PRIOR_FACTOR, 1.0)
    chosen = rng.choice(len(x), size=min(size, len(x)), replace=False, p=weights / weights.sum())
    return x[chosen], y[chosen]


def mixture(x: np.ndarray, y: np.ndarray, outliers: np.ndarray, share: float, size: int, seed: int) -> Shift:
    rng = np.random.default_rng([seed, 200 + round(share * 100)])
    strange = min(round(size * share), len(outliers))
    garments = rng.choice(len(x), size=size - strange, replace=False)
    others = rng.choice(len(outliers), size=strange, replace=False)
    return np.concatenate([x[garments], outliers[others]]), np.r_[y[garments], np.full(strange, NOT_CLOTHING)]


def build_shifts(x: np.ndarray, y: np.ndarray, size: int = 2000, seed: int = 0) -> dict[str, Shift]:
    """Every shift of the benchmark, from test images `x`, `y`: the unshifted split, the seven slices
    (`size` // 2 each, read through the server's conversion), the disturbances, one prior shift per
    class and the mixtures."""
    shifts: dict[str, Shift] = {"none": (x[:size], y[:size])}
    slices = build_slices(x, y, size=size // 2, seed=seed)
    shifts |= {f"slice_{name}": slices[name] for name in SLICES}
    shifts |= {name: disturbed(x, y, name, size, seed) for name in DISTURBANCES}
    shifts |= {f"prior_{k}x5": prior_shifted(x, y, k, size, seed) for k in np.unique(y).tolist()}
    outliers = np.concatenate(list(build_ood_slices(max(size // 6, 50), seed).values()))
    shifts |= {f"not_clothing_{round(s * 100)}pct": mixture(x, y, outliers, s, size, seed) for s in MIXTURES}
    return shifts


def kind(name: str) -> str:
    """The kind of shift a name belongs to: `rotation_20` -> rotation, `not_clothing_10pct` -> not_clothing."""
    return "not_clothing" if name.startswith("not_clothing") else name.split("_")[0]


def true_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The share of inputs answered right; an input that is not clothing has no right answer."""
    return float((predicted == labels).mean())
