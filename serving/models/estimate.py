"""The server's share of the label-free accuracy estimate (`tasks.evaluation.estimate` fits it; the
monitor computes the full one from the prediction log): `estimate.json` beside an exported model holds
the ATC threshold, and every answer more confident than it counts as likely right in
`clothes_estimated_correct_total`. Divided by `clothes_predictions_total` over any window and across
workers and replicas (counters add up; a per-worker gauge would not), that is the estimated accuracy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ESTIMATE_FILE = "estimate.json"
FORMAT = 1


@dataclass(frozen=True)
class AccuracyEstimate:
    threshold: float  # answers more confident than this count as likely right

    @classmethod
    def load(cls, path: Path) -> AccuracyEstimate:
        stats = json.loads(Path(path).read_text())
        if stats.get("format") != FORMAT or stats.get("estimator") != "atc":
            raise ValueError(f"{ESTIMATE_FILE} must be format {FORMAT} of the estimator 'atc'")
        return cls(float(stats["threshold"]))

    def likely_right(self, probabilities: np.ndarray) -> int:
        return int(np.count_nonzero(probabilities.max(axis=1) > self.threshold))


def shipped(threshold: float) -> dict:
    """What `estimate.json` holds."""
    return {"format": FORMAT, "estimator": "atc", "threshold": threshold}
