"""Kafka plumbing every service needs, written once: filter what a consumer returns, produce with
back-pressure, one transaction, the offsets a batch commits, and a topic read to its end.

``core.kafka`` is about reaching the cluster (settings, credentials, topics); this module is about moving
records. The detector, the incident service, retraining and the test kit all go through it, so a fix to how
one of them waits out a full queue or treats a fatal consumer error is a fix for all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class FatalError(RuntimeError):
    """Kafka reported an error that retrying cannot fix (fenced, unauthorised, a transaction that cannot
    commit): the service exits and its supervisor restarts it, which restores state from Kafka."""


def usable(msg: Message) -> bool:
    """Whether a consumed message is a record: end-of-partition events are skipped, transient errors logged
    and skipped (librdkafka retries them), a fatal one raises :class:`FatalError`."""
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        if err.fatal():
            raise FatalError(f"consumer: {err}")
        log.warning("consumer error: %s", err)
    return False


def records(msgs: list[Message]) -> list[Message]:
    """The records among a consume() result (see :func:`usable`); the common all-good batch costs no Python
    per message."""
    if not any(map(Message.error, msgs)):
        return msgs
    return [m for m in msgs if usable(m)]


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
            headers: Headers | None = None, on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
            timestamp: int = 0) -> None:
    """Produce one message, waiting out a full local queue (``BufferError``) by serving delivery reports;
    ``timestamp`` (epoch ms) is the record's event time, 0 for the client's clock."""
    kwargs: dict[str, Any] = {"value": value, "key": key}
    if headers:
        kwargs["headers"] = headers
    if on_delivery is not None:
        kwargs["on_delivery"] = on_delivery
    if timestamp:
        kwargs["timestamp"] = timestamp
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def next_offsets(msgs: Iterable[Message]) -> list[TopicPartition]:
    """What committing these messages writes: per topic and partition, the offset after the last one."""
    out: dict[tuple[str, int], int] = {}
    for m in msgs:
        key = (m.topic(), m.partition())
        out[key] = max(out.get(key, -1), m.offset() + 1)
    return [TopicPartition(t, p, o) for (t, p), o in sorted(out.items())]


def transaction(producer: Producer, consumer: Consumer, write: Callable[[], None],
                offsets: list[TopicPartition], timeout_s: float = 60) -> None:
    """One Kafka transaction: what ``write`` produces and the consumer group's ``offsets``, all or nothing.

    Raises the client's ``KafkaException``; the caller decides between retrying (after
    ``producer.abort_transaction``) and exiting, as only it knows whether its in-memory state is still exact."""
    producer.begin_transaction()
    write()
    if offsets:
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), timeout_s / 2)
    producer.commit_transaction(timeout_s)


def read_to_end(conf: dict[str, Any], topic: str, timeout_s: float = 30) -> list[Message]:
    """Every committed record of ``topic`` from its low watermark to its end now, in offset order per
    partition (read_committed: an aborted transaction's records never appear)."""
    consumer = Consumer({**conf, "group.id": f"read-{topic}", "enable.auto.commit": False,
                        "isolation.level": "read_committed"})
    try:
        md = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
        ends, starts = {}, {}
        for p in md.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if hi > lo:
                ends[p], starts[p] = hi, lo
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        out: list[Message] = []
        while ends:
            for msg in consumer.consume(5000, 1.0):
                if not usable(msg):
                    continue
                out.append(msg)
                if msg.offset() >= ends.get(msg.partition(), 0) - 1:
                    ends.pop(msg.partition(), None)
            # a transaction marker can be the last offset: stop once the position passed the end
            for tp in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends.get(tp.partition, 0):
                    ends.pop(tp.partition, None)
        return out
    finally:
        consumer.close()
