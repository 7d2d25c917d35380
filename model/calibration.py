"""The calibration rows' score distribution, kept in the bundle so sensitivity can change without retraining.

Training places the threshold at a target false-positive rate on held-out normal rows. Operators need to
move it later (another network, a noisier period) and to read how unusual an alert is. So the bundle keeps
the empirical quantiles of those rows' scores (``calibration.json``): the body on a linear grid and the tail
on a logarithmic one, down to a false-positive rate of 1e-4. From it, :meth:`threshold_at` places a threshold
for any target FPR in [1e-4, 0.5] and :meth:`normal_rank` says what share of normal rows score below a score.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

CALIBRATION_FILE = "calibration.json"
MIN_FPR, MAX_FPR = 1e-4, 0.5


@dataclasses.dataclass(frozen=True)
class ScoreDistribution:
    probabilities: np.ndarray  # increasing, in [0, 1]
    scores: np.ndarray  # the calibration scores' quantile at each probability ('higher' method: observed scores)
    rows: int

    @classmethod
    def fit(cls, normal_scores: np.ndarray) -> ScoreDistribution:
        scores = np.asarray(normal_scores, dtype=np.float64)
        if scores.size == 0:
            raise ValueError("cannot describe the score distribution of zero calibration rows")
        body = np.linspace(0.0, 0.99, 100)
        tail = 1.0 - np.logspace(np.log10(MIN_FPR), -2, 200)
        p = np.unique(np.concatenate([body, tail, [1.0]]))
        return cls(p, np.quantile(scores, p, method="higher"), int(scores.size))

    def threshold_at(self, target_fpr: float) -> float:
        """The threshold that flags ``target_fpr`` of the calibration rows (interpolated between quantiles)."""
        if not MIN_FPR <= target_fpr <= MAX_FPR:
            raise ValueError(f"target FPR must be in [{MIN_FPR:g}, {MAX_FPR:g}], got {target_fpr}")
        return float(np.interp(1.0 - target_fpr, self.probabilities, self.scores))

    def normal_rank(self, scores: np.ndarray) -> np.ndarray:
        """Share of calibration (normal) rows scoring below each score: 0.999 means rarer than 999 in 1,000."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.scores, self.probabilities)

    def to_json(self) -> str:
        return json.dumps({"probabilities": self.probabilities.tolist(), "scores": self.scores.tolist(),
                           "rows": self.rows})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ScoreDistribution:
        return cls(np.asarray(raw["probabilities"], dtype=np.float64), np.asarray(raw["scores"], dtype=np.float64),
                   int(raw["rows"]))
