"""Whether an input looks like the garments the model was trained on: an out-of-distribution score per
prediction, computed with numpy from the model's extra outputs and the statistics the pipeline fitted
(`ood.json` beside `model.tflite`; `tasks.evaluation.ood` makes both).

No single score separates clothing from everything else (measured: docs/ood.md), so three evidences
are combined, each read as "more unusual than this share of held-out garments" (its rank among them,
0-1) and the score is the largest rank:
- energy: -logsumexp of the logits; low for inputs the classifier has no strong answer for (noise);
- feature distance: the Mahalanobis distance of the flattened convolution features to the nearest
  class mean (tied covariance; Lee et al. 2018); large for digits, shapes, scenes;
- texture statistics: the same distance for each pooling layer's per-channel mean and standard
  deviation; large for stripes, text and textures the garments never show.
`in_distribution` is `score <= threshold`, the threshold calibrated in the pipeline so that at most 5%
of held-out garments and 10% of any photo slice are flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OOD_FILE = "ood.json"
# The exported model's outputs: `probabilities` plus what the evidences read.
FEATURES, POOLED, CHANNEL_STATS = "features", "pooled", "channel_stats"


@dataclass(frozen=True)
class ClassDistance:
    """Squared Mahalanobis distance to the nearest class mean, as one matrix product: with the precision
    factored as L L^T, |L^T (x - mu)|^2 = |x L|^2 - 2 (x L) . (mu L) + |mu L|^2."""

    whiten: np.ndarray  # (D, D): L
    means: np.ndarray  # (C, D): class means times L
    mean_norms: np.ndarray  # (C,)

    @classmethod
    def from_stats(cls, means: np.ndarray, precision_factor: np.ndarray) -> ClassDistance:
        projected = means @ precision_factor
        return cls(precision_factor, projected, (projected**2).sum(axis=1))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        z = x @ self.whiten
        return ((z**2).sum(axis=1)[:, None] - 2 * z @ self.means.T + self.mean_norms).min(axis=1)


@dataclass(frozen=True)
class OodDetector:
    logit_weights: np.ndarray  # (F, C): the last layer, so the logits come from the features output
    logit_bias: np.ndarray  # (C,)
    pooled: ClassDistance
    texture: ClassDistance
    reference: np.ndarray  # (3, Q): each evidence's quantiles on held-out garments, ascending
    threshold: float

    @classmethod
    def from_dict(cls, stats: dict) -> OodDetector:
        def array(key: str) -> np.ndarray:
            return np.asarray(stats[key], dtype=np.float64)

        return cls(
            logit_weights=array("logit_weights"),
            logit_bias=array("logit_bias"),
            pooled=ClassDistance.from_stats(array("pooled_means"), array("pooled_precision_factor")),
            texture=ClassDistance.from_stats(array("texture_means"), array("texture_precision_factor")),
            reference=array("reference_quantiles"),
            threshold=float(stats["threshold"]),
        )

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def evidence(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(3, N): energy, feature distance, texture distance; larger is more unusual."""
        logits = outputs[FEATURES].astype(np.float64) @ self.logit_weights + self.logit_bias
        top = logits.max(axis=1)
        energy = -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))
        pooled, texture = outputs[POOLED].astype(np.float64), outputs[CHANNEL_STATS].astype(np.float64)
        return np.stack([energy, self.pooled(pooled), self.texture(texture)])

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) in 0-1: the largest share of held-out garments that any evidence finds less unusual."""
        evidence = self.evidence(outputs)
        points = self.reference.shape[1]
        ranks = [np.searchsorted(ref, values) for ref, values in zip(self.reference, evidence, strict=True)]
        return np.max(ranks, axis=0) / points
