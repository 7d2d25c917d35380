"""The decision: a score above the threshold is an anomaly. The one place that comparison is written.

Scoring (a number per row, higher is more anomalous) is kept apart from deciding, as in pyod's
``decision_function``/``threshold_`` and river's anomaly filters: training calibrates the threshold,
evaluation and the detector apply it, and all of them call this.
"""

from __future__ import annotations

import numpy as np


def is_anomalous(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: True where the score is strictly above the threshold."""
    return np.asarray(scores) > threshold


def flagged_rows(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Positions of the anomalous rows."""
    return np.flatnonzero(is_anomalous(scores, threshold))
