"""Rows onto a topic as the producer sends them, and topics read back: alerts, incidents, committed offsets."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from core import wire
from core.kafka_io import produce, read_to_end
from core.records import Records
from testkit.cluster import unique


# ------------------------------------------------------------------------------------- topics, rows
def produce_rows(bootstrap: str, topic: str, data: Records, bad: dict[int, bytes] | None = None) -> int:
    """Produce the rows as the replay producer does (csv, record id key and header, label header),
    with ``bad[i]`` messages inserted before row i. Returns the number of messages."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    if data.raw is None:
        raise ValueError("produce_rows needs rows read with keep_raw=True")

    n = 0
    for i, (rid, line) in enumerate(zip(data.record_ids, data.raw, strict=True)):
        if bad and i in bad:
            key, value, hdrs = wire.encode(f"bad-{i}", bad[i])  # no label: as a hostile producer sends it
            produce(producer, topic, value, key, hdrs)
            n += 1
        key, value, hdrs = wire.encode(rid, data.payload(line).encode(), line.rsplit(",", 1)[1])
        produce(producer, topic, value, key, hdrs)
        n += 1
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("produce_rows: messages still undelivered after 60 s")
    return n


def drain(bootstrap: str, topic: str, expected: int, *, timeout_s: float = 120.0, group: str | None = None,
          extra: dict[str, object] | None = None) -> list[Message]:
    """Consume ``topic`` from the start in a fresh consumer group until ``expected`` messages arrived.

    Returns early only on the expected count; a short count after ``timeout_s`` is returned as is so the
    caller's assertion shows what was missing. Keeps reading 1 s past the count to catch duplicates.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group or unique("drain"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "isolation.level": "read_committed", **(extra or {})})
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {err}")
                out.append(msg)
            if len(out) >= expected and settle_until is None:
                settle_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return out


def _committed(bootstrap: str, group: str, topic: str) -> tuple[list[TopicPartition], dict[int, int]]:
    """The partitions of ``topic`` and the group's committed offset of each (absent: never committed)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in md.partitions]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])[group]
    return parts, {tp.partition: tp.offset for tp in fut.result(timeout=10).topic_partitions}


def committed_count(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets over every partition of ``topic``, summed (0 where none): how far it got,
    across restarts (a process' own counters start again at zero)."""
    return sum(max(offset, 0) for offset in _committed(bootstrap, group, topic)[1].values())


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """True when the group's committed offsets reach the end of every partition of ``topic``."""
    parts, committed = _committed(bootstrap, group, topic)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermark-probe"})
    try:
        for p in parts:
            _, high = probe.get_watermark_offsets(p, timeout=10)
            if committed.get(p.partition, -1) < high:
                return False
    finally:
        probe.close()
    return True


def record_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The offset after the last committed record of each partition of ``topic``: where a group that read
    everything has committed. On a topic written in transactions this is short of the high watermark (the last
    offset is a commit marker, which no consumer receives)."""
    ends: dict[int, int] = {}
    for m in read_to_end({"bootstrap.servers": bootstrap}, topic):
        ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    return ends


def committed_records(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    """True when the group's committed offsets reach ``ends`` (:func:`record_ends`) on every partition."""
    committed = _committed(bootstrap, group, topic)[1]
    return all(committed.get(p, -1) >= end for p, end in ends.items())


# ----------------------------------------------------------------------------------------- alerts
def alert_docs(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in messages]


def alert_timing(msg: Any) -> tuple[int, float, float]:
    """(record id, broker append time in s, produce-to-alert latency in ms) of one alert message.

    The alert topic must use LogAppendTime; the alert's ``event_time`` is the input record's timestamp.
    """
    doc = json.loads(msg.value())
    event_ms = dt.datetime.fromisoformat(doc["event_time"]).timestamp() * 1000
    append_ms = msg.timestamp()[1]
    return int(doc["record_id"]), append_ms / 1000, append_ms - event_ms


def alert_latencies(bootstrap: str, topic: str, idle_s: float = 5.0) -> np.ndarray:
    """Produce-to-alert latency (ms) of every alert on ``topic``, read until it has been quiet ``idle_s``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("lat"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[float] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_s:
        msgs = c.consume(1000, 0.5)
        if msgs:
            idle_since = time.monotonic()
        out += [alert_timing(m)[2] for m in msgs if m.error() is None]
    c.close()
    if not out:
        raise RuntimeError("no alerts arrived during the latency run")
    return np.asarray(out)


def assert_alerted(bootstrap: str, alerts: str, expected: set[int], *, no_duplicates: bool = False,
                   extra: dict[str, object] | None = None) -> int:
    """Read the whole alert topic: the alerted record ids must be exactly ``expected``. Returns duplicates."""
    docs = alert_docs(drain(bootstrap, alerts, len(expected), timeout_s=180, extra=extra))
    ids = Counter(int(d["record_id"]) for d in docs)
    missing, unexpected = expected - set(ids), set(ids) - expected
    assert not missing and not unexpected, f"{len(missing)} alerts missing, {len(unexpected)} unexpected"
    duplicates = sum(ids.values()) - len(ids)
    if no_duplicates:
        assert duplicates == 0, f"{duplicates} duplicate alerts"
    return duplicates


def latest_incidents(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """The incident topic as a compacted reader sees it: the latest record of each incident (none once pruned)."""
    latest: dict[str, bytes | None] = {}
    for m in read_to_end({"bootstrap.servers": bootstrap}, topic):
        latest[m.key().decode()] = m.value()
    return {k: json.loads(v) for k, v in latest.items() if v is not None}
