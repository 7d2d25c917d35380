"""Alert sink: one JSON document per flagged record, built for the whole batch.

An alert carries what an analyst needs to act without opening another tool: where the record came from
(topic, partition, offset, record id), when it happened and when it was seen, how far over the line it
is, and which features the model could not reconstruct (schema: ``detector/schemas/alert.schema.json``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from core import events, wire
from core import headers as h
from core.routing import alert_route
from core.timebounds import MAX_MS, MIN_MS
from core.wire import ParsedBatch
from detector.held_record import HeldRecord
from detector.outputs import OutMessage, cap_text
from detector.scoring import ScoredBatch
from model.scorer import Scorer

ALERT_SCHEMA = "kdd-alert/1"


def _iso_many(ms: list[int | None]) -> list[str | None]:
    """Epoch milliseconds as ISO 8601 in UTC (``...T04:12:00.123+00:00``; None for none), in one numpy call."""
    known = np.array([m if m is not None and m > 0 else 0 for m in ms], dtype="datetime64[ms]")
    text = np.char.add(np.datetime_as_string(known, unit="ms"), "+00:00").tolist()
    return [t if m is not None and m > 0 else None for t, m in zip(text, ms, strict=True)]


class AlertBuilder:
    def __init__(self, topic: str, threshold: float, model_version: str, scorer: Scorer, kind: str = "alert",
                 ranker: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.topic = topic
        self.ranker = ranker  # score -> share of normal calibration rows below it
        self.kind = kind  # "shadow_alert" for a candidate's: counted apart from the live alerts
        self.set_threshold(threshold)
        self.model_version = model_version
        self.scorer = scorer

    def set_threshold(self, threshold: float) -> None:
        """The line alerts are measured against (a recalibrated one moves it: ``detector.recalibration``)."""
        self.threshold = threshold
        # the share of calibration rows above the threshold: incidents condition each alert's rarity on it
        self.threshold_fpr = (round(1.0 - float(self.ranker(np.array([threshold]))[0]), 6)
                              if self.ranker is not None else None)

    def build(self, records: list[Any], parsed: ParsedBatch, scored: ScoredBatch, flagged: np.ndarray
              ) -> list[OutMessage]:
        """Alerts for the ``flagged`` parsed rows (positions into ``parsed``), explanations computed at once."""
        if not len(flagged) or scored.result is None:
            return []
        reasons = self.scorer.explain(scored.result, flagged, parsed.columns(flagged))
        now = _iso_many([int(time.time() * 1000)])[0]  # one detection time per batch: it is decided at once
        ranks = self.ranker(scored.scores[flagged]).tolist() if self.ranker is not None else [None] * len(flagged)
        cats = [dict(zip(parsed.schema.categorical, values, strict=True))
                for values in zip(*(c[flagged].tolist() for c in parsed.categories), strict=True)]
        if not parsed.categories:
            cats = [{} for _ in flagged]
        msgs = [records[i] for i in parsed.index[flagged].tolist()]
        # a producer sets any int64 as its record's time: outside core.timebounds' range it is no event time
        stamps = [ts if ts_type and MIN_MS <= ts < MAX_MS else None for ts_type, ts in map(type(msgs[0]).timestamp,
                                                                                         msgs)]
        return [self.alert(msg, score, reason, now, ms, event, rank, cat) for msg, score, reason, ms, event, rank, cat
                in zip(msgs, scored.scores[flagged].astype(np.float64).tolist(), reasons, stamps, _iso_many(stamps),
                       ranks, cats, strict=True)]

    def alert(self, msg: Any, score: float, top_features: list[dict[str, Any]], detected: str | None,
              event_ms: int | None, event_time: str | None, normal_rank: float | None = None,
              categories: dict[str, str] | None = None) -> OutMessage:
        in_headers = msg.headers()
        key = msg.key()
        label = cap_text(wire.label(in_headers))  # bounded: a header can be as large as a message
        record_id = cap_text(wire.record_id(in_headers, key))
        doc = {
            "schema": ALERT_SCHEMA,
            "record_id": record_id,
            "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
            "event_time": event_time,
            "detection_time": detected,
            "score": score,
            "threshold": float(self.threshold),
            "severity": score / float(self.threshold),  # unrounded: just over the line is still > 1
            "normal_rank": normal_rank,
            "threshold_fpr": self.threshold_fpr,
            "model_version": self.model_version,
            "label": label,
            "categories": categories or {},
            "top_features": top_features,
        }
        if isinstance(msg, HeldRecord):  # a Zeek connection: incidents name its hosts
            doc["conn"] = msg.conn
        event_type = events.ALERT if self.kind == "alert" else events.SHADOW_ALERT
        out_headers = [(h.MODEL_VERSION, self.model_version.encode()),
                       *events.headers(event_type, events.DETECTOR_SOURCE,
                                       f"{msg.topic()}/{msg.partition()}/{msg.offset()}/{self.model_version}",
                                       detected)]
        if record_id is not None:
            out_headers.append((h.RECORD_ID, record_id.encode()))
        if label is not None:
            out_headers.append((h.LABEL, label.encode()))
        # keyed by its kind's route, not the record's id (in a header and the document): an incident, its
        # verdicts and its kind's baseline then share one partition of the alert topic (core.routing)
        route = alert_route(doc["categories"].values(), top_features[0]["feature"] if top_features else None)
        return OutMessage(self.topic, route.encode(), json.dumps(doc, separators=(",", ":")).encode(), out_headers,
                          self.kind, event_ts_ms=event_ms, source=(msg.topic(), msg.partition(), msg.offset()))
