"""The training distribution, summarised per feature, so a detector can tell when live traffic drifts from it.

Numeric features: bin edges at the deciles of the fit rows (repeated edges merged: most KDD counts are
mostly zero) and the share of fit rows in each bin. Categorical features: the share of each category.
Saved in the bundle as ``profile.json``; a few kilobytes. The detector compares a sliding window of live
traffic with it by the population stability index (PSI), the usual drift statistic of credit scoring:
below 0.1 stable, 0.1-0.25 a shift worth a look, above 0.25 a different population.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd

from core.schema import RecordSchema

PROFILE_FILE = "profile.json"
_QUANTILES = np.linspace(0.1, 0.9, 9)
EPSILON = 1e-4  # share given to an empty bin, so PSI stays finite


@dataclasses.dataclass(frozen=True)
class FeatureProfile:
    edges: dict[str, np.ndarray]  # numeric feature -> increasing bin edges (bins: <e0, [e0,e1), ..., >=e_last)
    shares: dict[str, np.ndarray]  # feature -> expected share per bin (numeric) or per category (categorical)

    @classmethod
    def fit(cls, schema: RecordSchema, features: pd.DataFrame, categories: dict[str, tuple[str, ...]]
            ) -> FeatureProfile:
        edges: dict[str, np.ndarray] = {}
        shares: dict[str, np.ndarray] = {}
        for name in schema.numeric:
            col = features[name].to_numpy(dtype=np.float64)
            edges[name] = np.unique(np.quantile(col, _QUANTILES))
            shares[name] = _shares(np.searchsorted(edges[name], col, side="right"), len(edges[name]) + 1)
        for name in schema.categorical:
            index = pd.Index(list(categories[name]))
            codes = index.get_indexer(features[name].astype(str).to_numpy())
            codes[codes < 0] = len(index)
            shares[name] = _shares(codes, len(index) + 1)  # the last slot: categories unseen in training
        return cls(edges, shares)

    def to_json(self) -> str:
        return json.dumps({"edges": {k: v.tolist() for k, v in self.edges.items()},
                           "shares": {k: v.tolist() for k, v in self.shares.items()}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureProfile:
        return cls({k: np.asarray(v, dtype=np.float64) for k, v in raw["edges"].items()},
                   {k: np.asarray(v, dtype=np.float64) for k, v in raw["shares"].items()})


def _shares(codes: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(codes, minlength=n).astype(np.float64)
    return counts / max(1.0, counts.sum())


def psi(expected: np.ndarray, observed_counts: np.ndarray) -> float:
    """Population stability index of observed counts against expected shares."""
    total = observed_counts.sum()
    if total <= 0:
        return 0.0
    p = np.maximum(observed_counts / total, EPSILON)
    q = np.maximum(expected, EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))
