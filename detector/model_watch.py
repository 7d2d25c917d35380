"""Follows a model store's ``current`` pointer and prepares the new model while the old one keeps scoring.

A thread polls the pointer; when it names another bundle, the bundle is loaded and verified there (see
``detector.live_model``) and left in a slot that the loop takes between two batches. A bundle that fails
is refused once, with a log line and ``detector_model_load_failures_total``, and not retried until the
pointer moves again; the model in force goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from detector.live_model import LiveModel
from detector.metrics import DetectorMetrics
from model import store
from model.bundle import BundleError

log = logging.getLogger(__name__)


class ModelWatcher(threading.Thread):
    def __init__(self, location: Path, loaded: Path, load: Callable[[Path], LiveModel], poll_s: float,
                 metrics: DetectorMetrics) -> None:
        super().__init__(name="model-watch", daemon=True)
        self.location = location
        self.seen = loaded  # the target last loaded or refused: only a move of the pointer is news
        self.load = load  # verifies, traces, places the threshold: see detector.live_model.load_live
        self.poll_s = poll_s
        self.metrics = metrics
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._ready: LiveModel | None = None

    def take(self) -> LiveModel | None:
        """The verified model waiting to be swapped in, if any (the loop calls this between batches)."""
        with self._lock:
            model, self._ready = self._ready, None
        return model

    def run(self) -> None:
        while not self.stop_event.wait(self.poll_s):
            self.check()

    def check(self) -> None:
        try:
            target = store.resolve(self.location)
        except (store.StoreError, OSError) as exc:
            if self.seen != Path():
                log.error("model store %s: %s; still scoring with the loaded model", self.location, exc)
                self.metrics.model_load_failures.labels(reason="pointer").inc()
                self.seen = Path()
            return
        if target == self.seen:
            return
        self.seen = target
        log.info("model pointer moved to %s: verifying it while the current model keeps scoring", target)
        try:
            model = self.load(target)
        except BundleError as exc:
            log.error("refusing model bundle %s: %s; still scoring with the loaded model", target, exc)
            self.metrics.model_load_failures.labels(reason="bundle").inc()
            return
        except Exception:  # noqa: BLE001 - the watcher must outlive any bundle, or rollback never takes effect
            log.exception("refusing model bundle %s: loading it raised; still scoring with the loaded model", target)
            self.metrics.model_load_failures.labels(reason="error").inc()
            return
        with self._lock:
            self._ready = model
