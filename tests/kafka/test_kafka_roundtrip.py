"""End to end against the real broker: rows of the shared file go through a topic exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from confluent_kafka import Producer

from core.records import read_records
from testkit import drain
from tests.conftest import TopicFactory

N = 10_000


def test_10k_rows_arrive_exactly_once_by_content(kafka_bootstrap: str, make_topic: TopicFactory,
                                                  kdd_path: Path) -> None:
    data = read_records(kdd_path, limit=N, keep_raw=True)
    assert len(data) == N and data.raw is not None
    topic = make_topic("roundtrip", partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    for rid, line in zip(data.record_ids, data.raw, strict=True):
        producer.produce(topic, key=str(rid).encode(), value=data.payload(line).encode(),
                         on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert failures == []

    messages = drain(kafka_bootstrap, topic, N)
    received = Counter((m.key().decode(), m.value().decode()) for m in messages)
    pairs = zip(data.record_ids, data.raw, strict=True)
    sent = Counter((str(rid), data.payload(line)) for rid, line in pairs)
    assert len(messages) == N
    assert received == sent  # every row exactly once, byte for byte, under its own record id
    assert max(received.values()) == 1
