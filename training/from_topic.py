"""Training rows from the stream: the recent records of a Kafka topic, without the ones that looked like attacks.

The model must learn normal traffic only, and live traffic carries no ground truth. So what the live model
alerted on (read back from the alert topic, matched by source partition and offset) is left out, and, when
the operator asks, so is every record whose label header names an attack (replays of labelled files).
What was read, left out and used is reported, so a candidate's provenance is on record in its bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import Consumer, TopicPartition

from core import wire
from core.acl import Grant, require
from core.kafka import MEMORY_BOUNDS, KafkaSettings, check_connection
from core.kafka_io import read_range
from core.records import Records, as_frame
from core.schema import RecordSchema

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TopicWindow:
    """Which records to read: the last ``records`` (spread over the partitions) or those since a time."""

    topic: str
    records: int | None = None
    since: dt.datetime | None = None


@dataclasses.dataclass
class _Read:
    values: list[bytes] = dataclasses.field(default_factory=list)
    coords: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    labels: list[str | None] = dataclasses.field(default_factory=list)


def _consumer(kafka: KafkaSettings) -> Consumer:
    return Consumer({**MEMORY_BOUNDS, **kafka.client_config(), "group.id": f"retrain-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "isolation.level": "read_committed"})


def _ranges(consumer: Consumer, window: TopicWindow) -> dict[int, tuple[int, int]]:
    """Per partition, the [start, end) offsets to read; the end is the high watermark at start."""
    md = consumer.list_topics(window.topic, timeout=30).topics.get(window.topic)
    if md is None or md.error is not None or not md.partitions:
        raise ValueError(f"topic {window.topic!r} does not exist or has no partitions; check --from-topic")
    parts = sorted(md.partitions)
    marks = {p: consumer.get_watermark_offsets(TopicPartition(window.topic, p), timeout=30) for p in parts}
    starts = {p: lo for p, (lo, _) in marks.items()}
    if window.since is not None:
        ms = int(window.since.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(window.topic, p, ms) for p in parts], timeout=30)
        starts = {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1]) for tp in found}
    if window.records is not None:
        per = math.ceil(window.records / len(parts))
        starts = {p: max(starts[p], marks[p][1] - per) for p in parts}
    return {p: (max(starts[p], marks[p][0]), marks[p][1]) for p in parts}


def _read(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float) -> _Read:
    out = _Read()
    for msg in read_range(consumer, topic, ranges, timeout_s):
        out.values.append(msg.value() or b"")
        out.coords.append((msg.partition(), msg.offset()))
        out.labels.append(wire.label(msg.headers()))
    return out


def alerted(kafka: KafkaSettings, alert_topic: str, source_topic: str, timeout_s: float) -> set[tuple[int, int]]:
    """(partition, offset) of every input record of ``source_topic`` that has an alert on ``alert_topic``."""
    consumer = _consumer(kafka)
    try:
        ranges = _ranges(consumer, TopicWindow(alert_topic))
        read = _read(consumer, alert_topic, ranges, timeout_s)
    finally:
        consumer.close()
    out: set[tuple[int, int]] = set()
    for value in read.values:
        try:
            src = json.loads(value)["source"]
        except (ValueError, KeyError, TypeError):
            continue
        if src.get("topic") == source_topic:
            out.add((int(src["partition"]), int(src["offset"])))
    return out


def _parse(schema: RecordSchema, values: list[bytes]) -> tuple[pd.DataFrame, np.ndarray]:
    """Typed rows of the good values, and their positions: the detector's own parser (``core.wire``), so a record
    the detector scores is a record retraining reads, and one it dead-letters is left out here too."""
    batch = wire.Parser(schema).parse_safe(values)
    return as_frame(schema, batch.numeric, batch.categories), batch.index


def read_training_rows(kafka: KafkaSettings, window: TopicWindow, schema: RecordSchema, *,
                       alert_topic: str | None, exclude_attack_labels: bool, timeout_s: float = 300,
                       grants: Sequence[Grant] = ()) -> tuple[Records, dict[str, Any]]:
    """The rows to train a candidate on, and a report of what was read and left out; ``grants`` (the settings'
    ``acls()``) are checked first, so a missing one is named at once (exit 3)."""
    check_connection(kafka.client_config(), kafka.connect_timeout_s)
    require(kafka.client_config(), grants, "retraining")
    consumer = _consumer(kafka)
    try:
        ranges = _ranges(consumer, window)
        read = _read(consumer, window.topic, ranges, timeout_s)
    finally:
        consumer.close()
    flagged = alerted(kafka, alert_topic, window.topic, timeout_s) if alert_topic else set()
    keep = np.array([c not in flagged for c in read.coords], dtype=bool)
    excluded_alerted = int((~keep).sum())
    attack = np.array([lab is not None and schema.normalize_label(lab) != schema.label.normal
                       for lab in read.labels], dtype=bool)
    excluded_attack = int((keep & attack).sum()) if exclude_attack_labels else 0
    if exclude_attack_labels:
        keep &= ~attack
    values = [v for v, k in zip(read.values, keep, strict=True) if k]
    features, _ = _parse(schema, values)
    digest = hashlib.sha256(b"\n".join(values)).hexdigest()
    report = {"topic": window.topic, "offsets": {str(p): list(r) for p, r in ranges.items()},
              "read": len(read.values), "excluded_alerted": excluded_alerted,
              "excluded_attack_label": excluded_attack, "malformed": len(values) - len(features),
              "used": len(features), "alert_topic": alert_topic, "payload_sha256": digest}
    log.info("read %d records from %s: %d alerted, %d labelled attacks left out, %d malformed, %d used",
             report["read"], window.topic, excluded_alerted, excluded_attack, report["malformed"], len(features))
    lines = np.arange(1, len(features) + 1)
    return Records(f"kafka:{window.topic}", schema, features, None, lines, None, (), schema.n_features), report

