"""Every metric the detector exports, defined once, named by Prometheus conventions.

Labels are bounded: topic, partition, stage, reason, feature name. Never a record id. The anomaly-score
histogram's buckets are placed around the model's threshold (a ladder of multiples of it), so the
dashboard can show the share of traffic near, at and far above the line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

STAGES = ("poll", "parse", "score", "produce", "commit")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SCORE_MULTIPLES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


def score_buckets(threshold: float) -> tuple[float, ...]:
    return tuple(sorted({round(threshold * m, 12) for m in _SCORE_MULTIPLES}))


class DetectorMetrics:
    def __init__(self, threshold: float, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.consumed = Counter("detector_records_consumed_total", "Records read from the input topic",
                                ["topic", "partition"], registry=r)
        self.scored = Counter("detector_records_scored_total", "Records parsed and scored", registry=r)
        self.alerted = Counter("detector_alerts_total", "Alerts acknowledged by the broker", registry=r)
        self.dead_lettered = Counter("detector_dead_letters_total", "Records sent to the dead-letter topic",
                                     ["reason"], registry=r)
        self.unknown_categories = Counter("detector_unknown_categories_total",
                                          "Categorical values not seen in training (scored in the unknown slot)",
                                          ["feature"], registry=r)
        self.produce_retries = Counter("detector_output_retries_total",
                                       "Times a batch's alerts/dead letters had to be produced again", registry=r)
        self.score = Histogram("detector_anomaly_score", "Anomaly score of each scored record",
                               buckets=score_buckets(threshold), registry=r)
        self.batch_size = Histogram("detector_batch_size_records", "Records per micro-batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000), registry=r)
        self.stage = Histogram("detector_stage_duration_seconds", "Time per micro-batch stage", ["stage"],
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("detector_end_to_end_latency_seconds",
                             "From a record's Kafka timestamp to its alert's acknowledgement", buckets=_E2E_BUCKETS,
                             registry=r)
        self.lag = Gauge("detector_consumer_lag_records", "Records behind the partition's high watermark",
                         ["topic", "partition"], registry=r)
        self.threshold = Gauge("detector_model_threshold", "Score above which a record alerts", registry=r)
        self.model = Info("detector_model", "The loaded model bundle", registry=r)
        self.device = Info("detector_device", "Where scoring runs", registry=r)
        self.ready = Gauge("detector_ready", "1 when the model is loaded and partitions are assigned", registry=r)
        self.paused = Gauge("detector_consumption_paused", "1 while input is paused because outputs fail",
                            registry=r)
        self.assigned = Gauge("detector_assigned_partitions", "Input partitions assigned to this process",
                              registry=r)
        self.model_created = Gauge("detector_model_created_timestamp_seconds",
                                   "Creation time of the loaded bundle; a change means a new model", registry=r)
        self.validation_score = Gauge("detector_model_validation_score",
                                      "Score quantiles of held-out normal rows at training time (drift baseline)",
                                      ["quantile"], registry=r)
        self.threshold.set(threshold)
        for stage in STAGES:
            self.stage.labels(stage=stage)

    def describe_model(self, manifest: dict[str, Any]) -> None:
        """Model identity and its validation baseline, from the bundle manifest."""
        import datetime as dt

        self.model.info({"version": str(manifest["version"]), "threshold": repr(float(manifest["threshold"])),
                         "created": str(manifest.get("created", ""))})
        created = manifest.get("created")
        if created:
            self.model_created.set(dt.datetime.fromisoformat(created).timestamp())
        for q, v in manifest.get("validation", {}).get("score_quantiles_normal", {}).items():
            self.validation_score.labels(quantile=str(q)).set(float(v))

    def observe_stats(self, stats_json: str) -> None:
        """librdkafka statistics callback: per-partition consumer lag."""
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        for topic, t in stats.get("topics", {}).items():
            for part, p in t.get("partitions", {}).items():
                if part == "-1" or p.get("consumer_lag", -1) < 0:
                    continue
                self.lag.labels(topic=topic, partition=part).set(p["consumer_lag"])


class HealthServer:
    """``/metrics``, ``/healthz`` (process alive) and ``/readyz`` (model loaded, partitions assigned)."""

    def __init__(self, metrics: DetectorMetrics, port: int, ready: Callable[[], tuple[bool, str]],
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
        registry = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not log lines
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics (health: /healthz, /readyz)", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
