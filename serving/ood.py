"""Whether an input looks like the garments the model was trained on: an out-of-distribution score per
prediction (`tasks.evaluation.ood` fits it; docs/ood.md has the measurements).

No single evidence separates clothing from everything else, so the exported model computes three in
its graph, as the extra output `ood_evidence` (N, 3), larger meaning more unusual:
- energy, -logsumexp of the logits: inputs the classifier has no strong answer for (noise);
- feature distance: the Mahalanobis distance of the last layer's input to the nearest class mean
  (tied covariance; Lee et al. 2018): digits, shapes, scenes;
- texture distance: the same for each pooling layer's per-channel mean and standard deviation:
  stripes, textures, print.
`ood.json` beside the model holds each evidence's quantiles on held-out garments and the threshold.
Here, with numpy alone, each evidence becomes its rank among those garments (0-1) and the score is
the largest rank: "more unusual than this share of held-out garments". `in_distribution` is
`score <= threshold`, calibrated in the pipeline so that at most 5% of held-out garments and 10% of
any photo slice are flagged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OOD_FILE = "ood.json"
EVIDENCE = "ood_evidence"  # the exported model's extra output
EVIDENCES = ("energy", "feature_distance", "texture_distance")


@dataclass(frozen=True)
class OodDetector:
    reference: np.ndarray  # (3, Q): each evidence's quantiles on held-out garments, ascending
    threshold: float

    @classmethod
    def from_dict(cls, stats: dict) -> OodDetector:
        reference = np.asarray(stats["reference_quantiles"], dtype=np.float32)
        if reference.ndim != 2 or reference.shape[0] != len(EVIDENCES):
            raise ValueError(f"reference_quantiles must hold {len(EVIDENCES)} rows, one per evidence")
        return cls(reference, float(stats["threshold"]))

    @classmethod
    def load(cls, path: Path) -> OodDetector:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def scores(self, evidence: np.ndarray) -> np.ndarray:
        """(N, 3) evidence -> (N,) scores in 0-1."""
        ranks = [
            np.searchsorted(reference, values) for reference, values in zip(self.reference, evidence.T, strict=True)
        ]
        return np.max(ranks, axis=0) / np.float32(self.reference.shape[1])
