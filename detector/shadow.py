"""Shadow scoring: a candidate model scores every batch beside the live one and only reports.

What an operator needs before promoting: how many alerts the candidate would raise, where it agrees with
the live model (alerted by both, only live, only candidate) and how well the two rank records alike
(Spearman correlation of scores over a sliding window, computed when Prometheus scrapes). Its alerts may
go to a shadow topic, never to the alert topic. Counts move when the batch commits, like every other counter.
"""

from __future__ import annotations

import collections
import dataclasses
import threading

import numpy as np
from scipy.stats import spearmanr

from core.decision import is_anomalous
from core.wire import ParsedBatch
from detector.alerts import AlertBuilder
from detector.live_model import LiveModel
from detector.metrics import DetectorMetrics
from detector.outputs import OutMessage
from detector.scoring import ScoredBatch


@dataclasses.dataclass(frozen=True)
class ShadowBatch:
    both: int
    live_only: int
    shadow_only: int
    alerts: int
    outputs: list[OutMessage]


class Shadow:
    def __init__(self, candidate: LiveModel, metrics: DetectorMetrics, window: int = 50_000,
                 topic: str | None = None) -> None:
        self.candidate = candidate
        self.metrics = metrics
        self.alerts = (AlertBuilder(topic, candidate.threshold, candidate.version, candidate.scoring.scorer,
                                    kind="shadow_alert") if topic else None)
        self.pairs: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self.window = window
        self.held = 0
        self.lock = threading.Lock()  # the scrape thread computes the correlation
        metrics.shadow_rank_correlation.set_function(self.correlation)
        metrics.shadow_model.info({"version": candidate.version, "threshold": repr(candidate.threshold)})

    def score(self, records: list[object], parsed: ParsedBatch, live: ScoredBatch, live_threshold: float
              ) -> ShadowBatch:
        scored = self.candidate.scoring.score(parsed)
        mine = is_anomalous(scored.scores, self.candidate.threshold)
        theirs = is_anomalous(live.scores, live_threshold)
        outputs: list[OutMessage] = []
        if self.alerts is not None and mine.any():
            outputs = self.alerts.build(records, parsed, scored, np.flatnonzero(mine))
        self._remember(live.scores, scored.scores)
        return ShadowBatch(int((mine & theirs).sum()), int((theirs & ~mine).sum()), int((mine & ~theirs).sum()),
                           int(mine.sum()), outputs)

    def account(self, batch: ShadowBatch) -> None:
        m = self.metrics
        m.shadow_alerts.inc(batch.alerts)
        m.shadow_agreement.labels(outcome="both").inc(batch.both)
        m.shadow_agreement.labels(outcome="live_only").inc(batch.live_only)
        m.shadow_agreement.labels(outcome="shadow_only").inc(batch.shadow_only)

    def _remember(self, live: np.ndarray, candidate: np.ndarray) -> None:
        with self.lock:
            if len(live):
                self.pairs.append((live, candidate))
                self.held += len(live)
            while self.pairs and self.held - len(self.pairs[0][0]) >= self.window:
                self.held -= len(self.pairs.popleft()[0])

    def correlation(self) -> float:
        """Spearman rank correlation of live and candidate scores over the window (computed when scraped)."""
        with self.lock:
            if self.held < 2:
                return 0.0
            a = np.concatenate([p[0] for p in self.pairs])[-self.window:]
            b = np.concatenate([p[1] for p in self.pairs])[-self.window:]
        rho = spearmanr(a, b).statistic
        return float(rho) if np.isfinite(rho) else 0.0
