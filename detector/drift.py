"""Drift: how far a sliding window of live traffic has moved from the training distribution, per feature.

Per batch (every N-th record when ``--drift-sample-every`` > 1), each numeric value is placed in the
training profile's bins (one ``searchsorted`` per feature) and each category in its slot, then every
feature's slots are counted in one ``bincount``. The window keeps per-batch counts and subtracts the
oldest as new ones arrive, so its cost does not grow with its length. Gauges are refreshed at most once
a second: PSI per feature and the share of categories never seen in training.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from core.schema import RecordSchema
from detector.metrics import DetectorMetrics
from model.profile import FeatureProfile, psi


class DriftMonitor:
    def __init__(self, profile: FeatureProfile, schema: RecordSchema, metrics: DetectorMetrics, window: int,
                 sample_every: int = 1, refresh_s: float = 1.0) -> None:
        self.profile = profile
        self.numeric = schema.numeric
        self.categorical = schema.categorical
        self.metrics = metrics
        self.window = window
        self.sample_every = sample_every
        self.refresh_s = refresh_s
        self.sizes = [len(profile.edges[n]) + 1 for n in self.numeric] + [len(profile.shares[n])
                                                                           for n in self.categorical]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.intp)
        self.edges = [np.asarray(profile.edges[n], dtype=np.float64) for n in self.numeric]
        self.total = np.zeros(int(self.offsets[-1]), dtype=np.int64)
        # the window is kept as at most ~64 buckets of counts, whatever the batch size: memory is bounded by the
        # window in records, not by how many (small) batches filled it; the window slides a bucket at a time
        self.bucket_rows = max(1, window // 64)
        self.batches: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.open_rows = 0
        self.open_counts = np.zeros_like(self.total)
        self.rows = 0
        self.next_at = 0.0

    def observe(self, numeric: np.ndarray, category_ids: np.ndarray) -> None:
        """Add a batch's parsed rows (numeric matrix and category ids, schema order) to the window."""
        if self.sample_every > 1:
            numeric, category_ids = numeric[:: self.sample_every], category_ids[:: self.sample_every]
        n = len(numeric)
        if n == 0:
            return
        k = len(self.numeric)
        bins = np.empty((k + len(self.categorical), n), dtype=np.intp)  # global slot of every value
        for j, edges in enumerate(self.edges):
            bins[j] = np.searchsorted(edges, numeric[:, j], side="right")
        bins[k:] = category_ids.T
        bins += self.offsets[:-1, None]
        counts = np.bincount(bins.ravel(), minlength=len(self.total))  # every feature's bins in one pass
        self.total += counts
        self.rows += n
        self.open_counts += counts
        self.open_rows += n
        if self.open_rows >= self.bucket_rows:
            self.batches.append((self.open_rows, self.open_counts))
            self.open_rows, self.open_counts = 0, np.zeros_like(self.total)
        while self.batches and self.rows - self.batches[0][0] >= self.window:
            old_n, old = self.batches.popleft()
            self.total -= old
            self.rows -= old_n
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + self.refresh_s
            self.publish()

    def values(self) -> dict[str, float]:
        """PSI per feature over the window."""
        names = (*self.numeric, *self.categorical)
        return {name: psi(self.profile.shares[name], self.total[self.offsets[i]: self.offsets[i + 1]])
                for i, name in enumerate(names)}

    def publish(self) -> None:
        m = self.metrics
        for name, value in self.values().items():
            m.feature_psi.labels(feature=name).set(value)
        k = len(self.numeric)
        for j, name in enumerate(self.categorical):
            slots = self.total[self.offsets[k + j]: self.offsets[k + j + 1]]
            m.unknown_share.labels(feature=name).set(float(slots[-1] / max(1, slots.sum())))
        m.drift_window.set(self.rows)
