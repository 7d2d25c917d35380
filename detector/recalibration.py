"""Thresholds that hold under shift: the threshold follows the body of the live score distribution, within a band.

The bundle's threshold is placed at a target false-positive rate on calibration rows from the training period.
On traffic from another period the whole normal score distribution moves (the issue measured 1% becoming 2.2%
on KDD's later ``corrected`` file and about 8.5% on NSL-KDD), and with it the realised rate. The tail, where
the threshold lives, cannot be re-estimated from live traffic: attacks sit there and labels never reach the
detector. The body can. So, with ``--recalibrate``:

- **What is tracked.** A low quantile (``BODY_Q``, the median by default) of the log-scores of recent records
  that raised no alert: a window of the last ``--recalibrate-window`` such records (50,000), kept as bucketed
  histogram counts (bounded memory, the cost of one ``np.bincount`` per batch). Attacks mostly alert, so they
  are mostly not in it; the ones that do not alert sit near the line, far above the median.
- **How it moves the threshold.** The calibration rows give the same quantile for the training period. The
  threshold in force is the bundle's times the ratio of the two (a shift of the log-score distribution: the
  conformal view that the live non-alerting scores are exchangeable with calibration ones up to that shift).
  It is revised once per quarter window, moving at most ``MAX_STEP`` (5%) per revision towards its target.
- **What bounds an attacker.** Someone who floods records scoring just under the line to lift the threshold
  must outnumber the normal traffic (the median of the window moves only when more than half of the records
  below the line are theirs), moves it at most 5% per quarter window, and never beyond the band
  ``[threshold / band, threshold x band]`` (``--recalibrate-band``, 2): a record scoring above twice the
  bundle's threshold alerts whatever the stream did, and one at half of it never does. Flooding low scores to
  lower the threshold (and spend the analysts' page budget) meets the same band. Each revision is exported
  (``detector_model_threshold``, ``detector_threshold_revisions_total``) and logged, so a moving threshold is
  seen; ``tests/unit/test_recalibration.py`` floods it both ways.

Left out, on purpose: the state rebuilds after a restart (the first window uses the bundle's threshold again),
and each detector process tracks its own partitions. Off by default: with it, alerts are no longer a function
of the model alone (an offline re-scoring must replay the same stream).
"""

from __future__ import annotations

import collections
import logging
import math

import numpy as np

from detector.live_model import LiveModel
from detector.metrics import DetectorMetrics
from detector.settings import DetectorSettings
from model.bundle import BundleError
from model.calibration import ScoreDistribution

log = logging.getLogger(__name__)

BODY_Q = 0.5  # the quantile of non-alerting scores tracked
MAX_STEP = 0.05  # relative move of the threshold per revision, at most
BINS = 1024
LOG_SPAN = (-30.0, 10.0)  # natural-log scores relative to the bundle's threshold: e^-30 .. e^10 times it


class Recalibrator:
    """The threshold in force, revised from the live body of the score distribution (see the module docstring)."""

    def __init__(self, calibration: ScoreDistribution, base_threshold: float, window: int = 50_000,
                 band: float = 2.0) -> None:
        if base_threshold <= 0 or not math.isfinite(base_threshold):
            raise ValueError(f"the threshold must be a positive number to recalibrate, got {base_threshold}")
        self.base = float(base_threshold)
        self.band = band
        self.window = window
        self.threshold = self.base
        self.revisions = 0
        fpr = 1.0 - float(calibration.normal_rank(np.array([self.base]))[0])
        # the calibration rows' same statistic: the quantile BODY_Q of those below the line
        ref = float(np.interp(BODY_Q * (1.0 - fpr), calibration.probabilities, calibration.scores))
        self.reference = math.log(max(ref, 1e-300) / self.base)
        self.edges = np.linspace(*LOG_SPAN, BINS - 1)
        self.total = np.zeros(BINS, dtype=np.int64)
        self.rows = 0
        self.buckets: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.open_counts = np.zeros(BINS, dtype=np.int64)
        self.open_rows = 0
        self.since_revision = 0

    def observe(self, scores: np.ndarray) -> bool:
        """Add a batch's scores (those at or below the threshold in force count); True when the threshold moved."""
        below = scores[scores <= self.threshold]
        if not len(below):
            return False
        logs = np.log(np.maximum(below.astype(np.float64), 1e-300) / self.base)
        counts = np.bincount(np.searchsorted(self.edges, logs), minlength=BINS)
        self.total += counts
        self.rows += len(below)
        self.open_counts += counts
        self.open_rows += len(below)
        self.since_revision += len(below)
        if self.open_rows >= max(1, self.window // 64):
            self.buckets.append((self.open_rows, self.open_counts))
            self.open_counts, self.open_rows = np.zeros(BINS, dtype=np.int64), 0
        while self.buckets and self.rows - self.buckets[0][0] >= self.window:
            n, old = self.buckets.popleft()
            self.total -= old
            self.rows -= n
        if self.rows < self.window or self.since_revision < self.window // 4:
            return False
        self.since_revision = 0
        return self._revise()

    def body_log_quantile(self) -> float:
        """The window's quantile BODY_Q, in log-score relative to the bundle's threshold (bin resolution)."""
        cum = np.cumsum(self.total)
        i = int(np.searchsorted(cum, BODY_Q * cum[-1]))
        lo = self.edges[i - 1] if i > 0 else LOG_SPAN[0]
        hi = self.edges[i] if i < len(self.edges) else LOG_SPAN[1]
        return float((lo + hi) / 2)

    def target(self) -> float:
        """Where the body says the threshold belongs, within the band."""
        shift = self.body_log_quantile() - self.reference
        return min(self.base * self.band, max(self.base / self.band, self.base * math.exp(shift)))

    def _revise(self) -> bool:
        goal = self.target()
        step = min(max(goal / self.threshold, 1.0 - MAX_STEP), 1.0 + MAX_STEP)
        new = min(self.base * self.band, max(self.base / self.band, self.threshold * step))
        if new == self.threshold:
            return False
        self.threshold = new
        self.revisions += 1
        return True


class Thresholds:
    """The threshold the detector applies: the model's own, or (``--recalibrate``) the revised one. Rebuilt for
    each model put in force (a new model has its own calibration); each revision reaches the alert builder (so
    severities and ``threshold_fpr`` stay true to the line applied), the threshold gauge and the log."""

    def __init__(self, settings: DetectorSettings, metrics: DetectorMetrics, live: LiveModel) -> None:
        self.enabled, self.window, self.band = settings.recalibrate, settings.recalibrate_window, \
            settings.recalibrate_band
        self.metrics = metrics
        self.recal: Recalibrator | None = None
        self.follow(live)

    def follow(self, live: LiveModel) -> None:
        """Start over with the model now in force."""
        self.recal = None
        if not self.enabled:
            return
        calibration = live.bundle.calibration()
        if calibration is None:
            raise BundleError(f"{live.path}: made before bundles kept their calibration scores; --recalibrate "
                              "needs them: retrain the model, or run without --recalibrate")
        self.recal = Recalibrator(calibration, live.threshold, self.window, self.band)

    def current(self, live: LiveModel) -> float:
        return self.recal.threshold if self.recal is not None else live.threshold

    def observe(self, live: LiveModel, scores: np.ndarray) -> None:
        """A scored batch: revise the threshold if its window says so."""
        if self.recal is None or not self.recal.observe(scores):
            return
        live.alerts.set_threshold(self.recal.threshold)
        self.metrics.threshold.set(self.recal.threshold)
        self.metrics.threshold_revisions.inc()
        log.info("threshold revised to %.6g (%.3g x the model's; target %.3g x, band %g x): the median of the "
                 "last %d non-alerting scores moved", self.recal.threshold, self.recal.threshold / self.recal.base,
                 self.recal.target() / self.recal.base, self.band, self.window)
