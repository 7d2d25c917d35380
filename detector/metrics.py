"""Every metric the detector exports, defined once, named by Prometheus conventions.

Labels are bounded: topic, partition, stage, reason, feature name. Never a record id. The anomaly-score
histogram's buckets are placed around the model's threshold (a ladder of multiples of it), so the
dashboard can show the share of traffic near, at and far above the line.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# score: preprocessing and the model; alerts: decision, alert and dead-letter records, drift, shadow, label tally
STAGES = ("poll", "parse", "score", "alerts", "produce", "commit")
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
        self.skipped = Counter("detector_undecodable_records_total", "Input offsets skipped because their batch "
                               "could not be decoded (decompressed past receive.message.max.bytes, or corrupt); "
                               "each range is a dead letter", ["topic"], registry=r)
        self.dead_lettered = Counter("detector_dead_letters_total", "Records sent to the dead-letter topic",
                                     ["reason"], registry=r)
        self.unknown_categories = Counter("detector_unknown_categories_total",
                                          "Categorical values not seen in training (scored in the unknown slot)",
                                          ["feature"], registry=r)
        self.too_large = Counter("detector_outputs_too_large_total", "Outputs (alerts, dead letters) larger than "
                                 "--max-output-bytes or refused by the broker for their size, sent as "
                                 "output_too_large dead letters with the source coordinates", ["kind"], registry=r)
        for kind in ("alert", "shadow_alert", "dead_letter"):
            self.too_large.labels(kind=kind)
        self._input_metrics(r)
        self.produce_retries = Counter("detector_output_retries_total",
                                       "Times a batch's alerts/dead letters had to be produced again", registry=r)
        self.output_errors = Counter("detector_output_errors_total", "Outputs or transactions the broker refused, by "
                                     "Kafka error name (UNKNOWN_TOPIC_OR_PART: an output topic is gone)", ["error"],
                                     registry=r)
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
        self.device = Info("detector_device", "Where scoring runs (device and Keras backend)", registry=r)
        self.ready = Gauge("detector_ready", "1 when the model is loaded and partitions are assigned", registry=r)
        self.paused = Gauge("detector_consumption_paused", "1 while input is paused because outputs fail",
                            registry=r)
        self.assigned = Gauge("detector_assigned_partitions", "Input partitions assigned to this process",
                              registry=r)
        self.model_created = Gauge("detector_model_created_timestamp_seconds",
                                   "Creation time of the loaded bundle; a change means a new model", registry=r)
        self.validation_score = Gauge("detector_model_validation_score",
                                      "Score quantiles of held-out normal rows at training time (drift baseline), by "
                                      "level; not a summary, so the label is not called 'quantile'", ["level"],
                                      registry=r)
        self._lifecycle(r)
        for reason in ("bundle", "pointer"):  # series exist before the first refusal: rate() and alerts see 0
            self.model_load_failures.labels(reason=reason)
        for outcome in ("both", "live_only", "shadow_only"):
            self.shadow_agreement.labels(outcome=outcome)
        self.threshold.set(threshold)
        for stage in STAGES:
            self.stage.labels(stage=stage)

    def _input_metrics(self, r: CollectorRegistry) -> None:
        """What reading records counts beyond parsing: CSV label fields, and the conn stage's (Zeek input)
        featurizer events, state held, restores and replays."""
        self.label_fields = Counter("detector_records_with_label_field_total",
                                    "CSV records that carried their file's label (and trailing) fields: accepted, "
                                    "the label ignored for scoring", registry=r)
        self.featurizer_events = Counter("detector_featurizer_events_total", "Zeek featurizer events: late (clamped "
                                         "to the lateness bound), pending_capped, window_capped, hosts_capped, "
                                         "hosts_expired (core.featurizer)", ["event"], registry=r)
        self.featurizer_state = Gauge("detector_featurizer_state", "Zeek featurizer state held: hosts, window "
                                      "(connections in the 2 s window), pending (records waiting out the lateness)",
                                      ["part"], registry=r)
        self.featurizer_restores = Counter("detector_featurizer_restores_total", "Partitions assigned: fresh (no "
                                           "commit), restored (from the snapshot the commit names), lost (snapshot "
                                           "missing: empty windows)", ["outcome"], registry=r)
        self.featurizer_snapshots = Histogram("detector_featurizer_snapshot_seconds", "Time to take and encode one "
                                              "partition's featurizer snapshot (the next waits at least 10 times as "
                                              "long)", buckets=(0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.replayed = Counter("detector_records_replayed_total", "Records read again after a restart to rebuild "
                                "the featurizer's state (outputs suppressed: written before)", registry=r)

    def _lifecycle(self, r: CollectorRegistry) -> None:
        """Model swaps, shadow scoring and drift."""
        self.threshold_revisions = Counter("detector_threshold_revisions_total", "Times --recalibrate moved the "
                                           "threshold (detector_model_threshold is the one in force)", registry=r)
        self.model_swaps = Counter("detector_model_swaps_total", "Times a new model was swapped in without a restart",
                                   registry=r)
        self.model_load_failures = Counter("detector_model_load_failures_total",
                                           "Model bundles refused (the model in force went on)", ["reason"],
                                           registry=r)
        self.shadow_model = Info("detector_shadow_model", "The candidate scored in shadow (--shadow-model)", registry=r)
        self.shadow_alerts = Counter("detector_shadow_alerts_total", "Records the candidate would have alerted on",
                                     registry=r)
        self.shadow_agreement = Counter("detector_shadow_decisions_total",
                                        "Alerting decisions of the live model and the candidate, by agreement",
                                        ["outcome"], registry=r)
        self.shadow_rank_correlation = Gauge("detector_shadow_rank_correlation",
                                             "Spearman correlation of live and candidate scores over the window",
                                             registry=r)
        self.feature_psi = Gauge("detector_feature_drift_psi",
                                 "Population stability index of the recent window against the training profile",
                                 ["feature"], registry=r)
        self.unknown_share = Gauge("detector_unknown_category_ratio",
                                   "Share of the recent window's values never seen in training", ["feature"],
                                   registry=r)
        self.decisions = Counter("detector_decisions_total",
                                 "Scored records by their label header's family and the decision (labelled replays)",
                                 ["family", "decision"], registry=r)
        self.drift_window = Gauge("detector_drift_window_records", "Records in the drift window", registry=r)

    def describe_model(self, manifest: dict[str, Any], threshold: float) -> None:
        """Model identity and its validation baseline, from the bundle manifest."""
        self.threshold.set(threshold)
        self.model.info({"version": str(manifest["version"]), "threshold": repr(float(threshold)),
                         "bundle_threshold": repr(float(manifest["threshold"])),
                         "created": str(manifest.get("created", ""))})
        created = manifest.get("created")
        if created:
            self.model_created.set(dt.datetime.fromisoformat(created).timestamp())
        for q, v in manifest.get("validation", {}).get("score_quantiles_normal", {}).items():
            self.validation_score.labels(level=str(q)).set(float(v))

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


def observe_many(hist: Any, values: np.ndarray) -> None:
    """Add a whole array to a prometheus_client Histogram in one step (observe() per row costs ~1 us each)."""
    buckets = getattr(hist, "_upper_bounds", None)
    if buckets is None or not hasattr(hist, "_buckets"):
        for v in values:
            hist.observe(float(v))
        return
    counts = np.bincount(np.searchsorted(np.asarray(buckets), values, side="left"), minlength=len(buckets))
    for i, c in enumerate(counts[: len(buckets)]):
        if c:
            hist._buckets[i].inc(int(c))
    hist._sum.inc(float(np.sum(values)))
