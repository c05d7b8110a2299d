"""Whether an input looks like the garments the model was trained on: an out-of-distribution score per
prediction (`tasks.evaluation.ood` fits it; docs/ood.md has the measurements).

No single evidence separates clothing from everything else, so the exported model computes four in
its graph, as the extra output `ood_evidence` (N, 4), larger meaning more unusual:
- energy, -logsumexp of the logits: inputs the classifier has no strong answer for (noise);
- feature distance: the Mahalanobis distance of the last layer's input to the nearest class mean
  (tied covariance; Lee et al. 2018): digits, shapes, scenes;
- texture distance: the same for each pooling layer's per-channel mean and standard deviation:
  stripes, textures, print;
- pixel distance: the same for nine statistics of the input image itself (ink, steps between pixels,
  profiles): text, stripes, noise, whatever a training run learned.
Versions exported with the first three only keep working: `ood.json` names its evidences.
`ood.json` beside the model holds each evidence's quantiles on held-out garments and the threshold.
Here, with numpy alone, each evidence becomes its rank among those garments (0-1) and the score is
the largest rank: "more unusual than this share of held-out garments". `in_distribution` is
`score <= threshold`, calibrated in the pipeline so that at most 5% of held-out garments and 10% of
any photo slice are flagged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OOD_FILE = "ood.json"
EVIDENCE = "ood_evidence"  # the exported model's extra output
EVIDENCES = ("energy", "feature_distance", "texture_distance", "pixel_distance")


class OodDetector:
    """Each evidence's quantiles on held-out garments (evidences, Q), ascending, and the threshold."""

    def __init__(self, reference: np.ndarray, threshold: float) -> None:
        self.reference = np.asarray(reference, dtype=np.float64)
        self.threshold = float(threshold)
        rows, points = self.reference.shape
        low, high = self.reference[:, 0], self.reference[:, -1]
        # The rows laid end to end: row k, and every value clipped to [low_k - 1, high_k + 1], sits above
        # row k - 1, so one `searchsorted` ranks all the evidences of every image.
        self._low, self._high = low - 1, high + 1
        self._offsets = np.concatenate([[0.0], np.cumsum(high - low + 4)[:-1]]) - low + 2
        self._flat = (self.reference + self._offsets[:, None]).ravel()
        self._starts = np.arange(rows) * points
        self._points = np.float64(points)

    @classmethod
    def from_dict(cls, stats: dict) -> OodDetector:
        reference = np.asarray(stats["reference_quantiles"], dtype=np.float64)
        named = len(stats.get("evidences", EVIDENCES[:3]))  # the first exports named three
        if reference.ndim != 2 or reference.shape[0] != named or reference.shape[1] < 2:
            raise ValueError(f"reference_quantiles must hold {named} rows of quantiles, one per evidence")
        return cls(reference, float(stats["threshold"]))

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def scores(self, evidence: np.ndarray) -> np.ndarray:
        """(N, evidences) -> (N,) scores in 0-1: per evidence, the share of held-out garments below it."""
        placed = np.maximum(np.minimum(evidence, self._high), self._low) + self._offsets  # np.clip: 3x slower
        return (np.searchsorted(self._flat, placed) - self._starts).max(axis=1) / self._points
