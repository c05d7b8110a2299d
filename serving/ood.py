"""Whether an input looks like the garments the model was trained on: an out-of-distribution score per
prediction (`tasks.evaluation.ood` fits it; docs/ood.md has the measurements).

No single evidence separates clothing from everything else, so the exported model computes four in
its graph, as the extra output `ood_evidence` (N, 4), larger meaning more unusual:
- energy, -logsumexp of the logits: inputs the classifier has no strong answer for (noise);
- feature distance: the Mahalanobis distance of the last layer's input to the nearest class mean
  (tied covariance; Lee et al. 2018): digits, shapes, scenes;
- texture distance: the same for each pooling layer's per-channel mean and standard deviation:
  stripes, textures, print;
- pixel distance: the same for ten statistics of the input image itself (ink, steps between pixels,
  profiles, the edge): text, stripes, noise, scenes, whatever a training run learned.
Versions exported with the first three only keep working: `ood.json` names its evidences.
`ood.json` beside the model holds each evidence's quantiles on held-out garments and the threshold.
Here, with numpy alone, each evidence becomes its rank among those garments, each rank a normal
z-score, and their sum (Stouffer's method) is ranked once more among the same garments: the score is
"more unusual than this share of held-out garments". An input a little unusual on several evidences
scores above one very unusual on a single evidence that garments also reach now and then; the
largest rank, which earlier exports use, missed a quarter to half of text and scene crops on some
training seeds (docs/ood.md). `in_distribution` is `score <= threshold`, calibrated in the pipeline
so that at most 5% of held-out garments and 10% of any photo slice are flagged.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np

OOD_FILE = "ood.json"
EVIDENCE = "ood_evidence"  # the exported model's extra output
EVIDENCES = ("energy", "feature_distance", "texture_distance", "pixel_distance")


class OodDetector:
    """Each evidence's quantiles on held-out garments (evidences, Q), ascending, the threshold, and the
    quantiles of the evidences' summed z-scores on the same garments (None: the largest rank, as the
    first exports combined them)."""

    def __init__(self, reference: np.ndarray, threshold: float, combined: np.ndarray | None = None) -> None:
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
        self.combined = None if combined is None else np.asarray(combined, dtype=np.float64)
        # A rank k of 0..Q as the z-score of its upper tail, clipped half a step inside (0, 1).
        share = np.clip(np.arange(points + 1) / points, 0.5 / points, 1 - 0.5 / points)
        self._z = np.array([NormalDist().inv_cdf(float(q)) for q in share])

    @classmethod
    def from_dict(cls, stats: dict) -> OodDetector:
        reference = np.asarray(stats["reference_quantiles"], dtype=np.float64)
        named = len(stats.get("evidences", EVIDENCES[:3]))  # the first exports named three
        if reference.ndim != 2 or reference.shape[0] != named or reference.shape[1] < 2:
            raise ValueError(f"reference_quantiles must hold {named} rows of quantiles, one per evidence")
        combined = stats.get("combined_quantiles")  # absent: exported before Stouffer's method
        if combined is not None and (np.ndim(combined) != 1 or len(combined) < 2):
            raise ValueError("combined_quantiles must be one row of quantiles")
        return cls(reference, float(stats["threshold"]), combined)

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def ranks(self, evidence: np.ndarray) -> np.ndarray:
        """(N, evidences) -> (N, evidences) integer ranks 0..Q among the held-out garments."""
        placed = np.maximum(np.minimum(evidence, self._high), self._low) + self._offsets  # np.clip: 3x slower
        return np.searchsorted(self._flat, placed) - self._starts

    def stouffer(self, evidence: np.ndarray) -> np.ndarray:
        """(N, evidences) -> (N,) the sum of the ranks' z-scores, what `combined` holds quantiles of."""
        return self._z[self.ranks(evidence)].sum(axis=1)

    def scores(self, evidence: np.ndarray) -> np.ndarray:
        """(N, evidences) -> (N,) scores in 0-1: the share of held-out garments that look more usual."""
        if self.combined is None:
            return self.ranks(evidence).max(axis=1) / self._points
        return np.searchsorted(self.combined, self.stouffer(evidence)) / np.float64(len(self.combined))
