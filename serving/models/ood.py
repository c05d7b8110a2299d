"""Whether an input looks like the garments the model was trained on: an out-of-distribution score per
prediction (`tasks.evaluation.ood` fits it; docs/ood.md has the measurements).

No single evidence separates clothing from everything else, so the exported model computes three in
its graph, larger meaning more unusual:
- the largest logit, negated: inputs the classifier has no strong answer for (noise, text);
- feature distance: the Mahalanobis distance of the last layer's input to the nearest class mean
  (tied covariance; Lee et al. 2018): digits, shapes;
- texture distance: the same for where in the frame the first pooling layer responds and how strongly
  the last one does: digits, stripes, text, scenes, noise.
Each evidence becomes its rank among held-out garments as a normal z-score, the z-scores are summed
(Stouffer's method) and the sum is ranked among the same garments: the score is "more unusual than
this share of held-out garments". An input a little unusual on several evidences scores above one very
unusual on a single evidence that garments also reach now and then. The graph does all of it (each
rank read off the garments' quantiles by linear interpolation) and answers the score itself,
`ood_score` (N,): the server only compares it with the threshold in `ood.json`. `in_distribution` is
`score <= threshold`, calibrated in the pipeline so that at most 5% of held-out garments and 10% of any
photo slice are flagged.

`ood.json` says its format (`format`), and the reader of that format reads it:
- 2: the threshold; the graph answers `ood_score`.
- 1: exports of 0.1.x, whose graph answers the evidence, `ood_evidence` (N, 3 or 4), and whose
  `ood.json` holds each evidence's quantiles on held-out garments, which `OodDetector` ranks with numpy
  here (the earliest took the largest rank instead of Stouffer's sum). Those files carry no `format`;
  `served_format` tells them by their quantiles.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import NormalDist

import numpy as np

OOD_FILE = "ood.json"
SCORE = "ood_score"  # the exported model's extra output (format 2)
EVIDENCE = "ood_evidence"  # format 1's: the evidence, ranked here
EVIDENCES = ("energy", "feature_distance", "texture_distance")  # what format 1 ranks when it names none
FORMAT = 2  # what the pipeline writes now


def served_format(stats: dict) -> int:
    """The format an `ood.json` says it has; files written before formats were numbered (0.1.x) are
    format 1 when they hold the evidences' quantiles, else 2."""
    return int(stats.get("format") or (1 if "reference_quantiles" in stats else 2))


class OodFlag:
    """The threshold, and for versions whose graph answers the evidence rather than the score, the
    `OodDetector` that ranks it."""

    def __init__(self, threshold: float, detector: OodDetector | None = None) -> None:
        self.threshold = float(threshold)
        self.detector = detector

    @classmethod
    def from_dict(cls, stats: dict) -> OodFlag:
        version = served_format(stats)
        if version == 1:
            return cls(float(stats["threshold"]), OodDetector.from_dict(stats))
        if version == 2:
            return cls(float(stats["threshold"]))
        raise ValueError(f"{OOD_FILE} has format {version}; this server reads formats 1 and 2")

    @classmethod
    def load(cls, path: Path) -> OodFlag:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def scores(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) scores in 0-1 from the model's outputs: the graph's own, or its evidence ranked here."""
        if self.detector is not None:
            return self.detector.scores(outputs[EVIDENCE])
        return outputs[SCORE]


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
        named = len(stats.get("evidences", EVIDENCES))
        if reference.ndim != 2 or reference.shape[0] != named or reference.shape[1] < 2:
            raise ValueError(f"reference_quantiles must hold {named} rows of quantiles, one per evidence")
        combined = stats.get("combined_quantiles")  # absent: exported before Stouffer's method
        if combined is not None and (np.ndim(combined) != 1 or len(combined) < 2):
            raise ValueError("combined_quantiles must be one row of quantiles")
        return cls(reference, float(stats["threshold"]), combined)

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
