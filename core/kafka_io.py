"""Kafka plumbing every service needs, written once: filter what a consumer returns, produce with
back-pressure, one transaction, the offsets a batch commits, and a topic read to its end.

``core.kafka`` is about reaching the cluster (settings, credentials, topics); this module is about moving
records. The detector, the incident service, retraining and the test kit all go through it, so a fix to how
one of them waits out a full queue or treats a fatal consumer error is a fix for all.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from core import pyslots
from core.kafka import MEMORY_BOUNDS, access_denied, is_authorization_error

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
UNREADABLE_HEADERS = "dlq.unreadable_headers"  # stands in for headers the client could not convert


class FatalError(RuntimeError):
    """Kafka reported an error that retrying cannot fix (fenced, unauthorised, a transaction that cannot
    commit): the service exits and its supervisor restarts it, which restores state from Kafka."""


def usable(msg: Message, conf: dict[str, Any] | None = None, *, uses_group: bool = True) -> bool:
    """Whether a consumed message is a record: end-of-partition events are skipped, transient errors logged
    and skipped (librdkafka retries them), a fatal one raises :class:`FatalError`, and a denied read (the group
    or the topic) raises ``AccessDenied`` naming what to grant, from the consumer's settings ``conf``.

    A reader that assigns partitions itself (``uses_group=False``) still has a ``group.id`` (librdkafka insists)
    and librdkafka looks up its coordinator; a denial of that group is no concern of a reader that never joins
    or commits, so it is skipped."""
    err = msg.error()
    if err is None:
        return True
    if err.code() != KafkaError._PARTITION_EOF:
        if err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED and not uses_group:
            log.debug("assigned reader: %s (no group is used)", err)
            return False
        if is_authorization_error(err):
            raise access_denied(conf or {}, err, "consumer", msg.topic())
        if err.fatal():
            raise FatalError(f"consumer: {err}")
        log.warning("consumer error: %s", err)
    return False


def records(msgs: list[Message], conf: dict[str, Any] | None = None, *, uses_group: bool = True) -> list[Message]:
    """The records among a consume() result (see :func:`usable`), each with headers that are safe to read
    (:func:`read_headers`); the common all-good batch costs no Python per message beyond that."""
    return checked_records(msgs, conf, uses_group=uses_group)[0]


def checked_records(msgs: list[Message], conf: dict[str, Any] | None = None, *, uses_group: bool = True
                    ) -> tuple[list[Message], list[int]]:
    """:func:`records`, and the positions among them of records whose headers could not be read."""
    good = msgs if not any(map(Message.error, msgs)) else [m for m in msgs if usable(m, conf, uses_group=uses_group)]
    return good, read_headers(good)


def read_headers(msgs: Sequence[Message]) -> list[int]:
    """Convert every message's headers once, here, where a failure is caught; returns the positions of messages
    whose headers could not be read, each now holding one ``UNREADABLE_HEADERS`` header instead.

    confluent-kafka decodes header keys as strict UTF-8 and, on a key that is not (any non-librdkafka client can
    send one), caches a list holding a tuple whose key slot is NULL and returns it with the decode error left
    pending (issue 31 item 3). The error surfaces later, wherever CPython next checks (the end of a loop), and
    whoever unpacks the tuple dereferences NULL: the detector segfaulted, then crash-looped on ``SystemError``.
    So the first conversion of every record happens here, in one C-level pass; only when that pass raises are
    the cached lists inspected (``core.pyslots``: the tuple's key slot read as a pointer, never touched as an
    object) and each broken one replaced (``set_headers``) before anything else can read it. Callers that care
    (the detector) dead-letter those records; the rest never see a broken list."""
    try:
        collections.deque(map(Message.headers, msgs), maxlen=0)
        return []
    except (SystemError, UnicodeDecodeError) as exc:
        log.warning("a batch holds header keys that are not UTF-8 (%s): finding the records", str(exc)[:200])
    bad: list[int] = []
    for i, msg in enumerate(msgs):
        pairs = msg.headers()  # cached now (or converted here, its error cleared below)
        pyslots.clear_pending_error()
        if pairs is not None and any(pyslots.tuple_slot_is_null(t, 0) for t in pairs):
            del pairs
            msg.set_headers([(UNREADABLE_HEADERS, b"a header key is not valid UTF-8")])
            log.warning("%s[%d]@%d: headers not readable (a key is not UTF-8): a dead letter", msg.topic(),
                        msg.partition(), msg.offset())
            bad.append(i)
    return bad


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
            headers: Headers | None = None, on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
            timestamp: int = 0, partition: int | None = None) -> None:
    """Produce one message, waiting out a full local queue (``BufferError``) by serving delivery reports;
    ``timestamp`` (epoch ms) is the record's event time, 0 for the client's clock; ``partition`` None lets the
    partitioner choose by key."""
    kwargs: dict[str, Any] = {"value": value, "key": key}
    if partition is not None:
        kwargs["partition"] = partition
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


def next_offsets(msgs: Sequence[Message]) -> list[TopicPartition]:
    """What committing these messages writes: per topic and partition, the offset after the last one.

    Over numpy arrays filled by C-level maps (the detector calls it for every batch): no Python per message
    when the batch holds one topic."""
    if not msgs:
        return []
    n = len(msgs)
    parts = np.fromiter(map(Message.partition, msgs), dtype=np.int64, count=n)
    offs = np.fromiter(map(Message.offset, msgs), dtype=np.int64, count=n)
    topics = list(map(Message.topic, msgs))
    names = sorted(set(topics))
    out: list[TopicPartition] = []
    for name in names:
        mask = np.ones(n, dtype=bool) if len(names) == 1 else np.array([t == name for t in topics], dtype=bool)
        p, o = parts[mask], offs[mask]
        out += [TopicPartition(name, int(q), int(o[p == q].max()) + 1) for q in np.unique(p)]
    return out


def merge_offsets(*groups: list[TopicPartition]) -> list[TopicPartition]:
    """Offsets to commit from several sources: the highest per topic and partition."""
    best: dict[tuple[str, int], int] = {}
    for tp in (tp for group in groups for tp in group):
        key = (tp.topic, tp.partition)
        best[key] = max(best.get(key, tp.offset), tp.offset)
    return [TopicPartition(t, p, o) for (t, p), o in best.items()]


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


def read_range(consumer: Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float = 300,
               conf: dict[str, Any] | None = None, keep: Callable[[Message], bool] | None = None) -> list[Message]:
    """The records of ``topic`` in ``[start, end)`` per partition, in offset order per partition.

    With read_committed a transaction marker can hold the last offset: a partition is done once the consumer's
    position passed its end, not only when a record at ``end - 1`` arrived. Raises ``TimeoutError`` naming the
    partitions not read to their end in ``timeout_s``."""
    todo = {p: end for p, (start, end) in ranges.items() if end > start}
    consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in todo])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end within {timeout_s:.0f}s")
        for msg in records(consumer.consume(5000, 0.5), conf, uses_group=False):
            p, o = msg.partition(), msg.offset()
            if p not in todo or o >= todo[p]:
                continue
            if keep is None or keep(msg):  # a filter keeps memory to what the caller wants of a large range
                out.append(msg)
            if o >= todo[p] - 1:
                del todo[p]
        for tp in consumer.position([TopicPartition(topic, p) for p in list(todo)]):
            if tp.offset >= todo.get(tp.partition, 0):
                todo.pop(tp.partition, None)
    return out


def read_to_end(conf: dict[str, Any], topic: str, timeout_s: float = 300,
                partitions: Iterable[int] | None = None) -> list[Message]:
    """Every committed record of ``topic`` (of ``partitions`` only, when given) from its low watermark to its end
    now (read_committed: an aborted transaction's records never appear; an open one is waited for until it ends);
    what retention deleted is simply not there."""
    consumer = Consumer({**MEMORY_BOUNDS, **conf, "group.id": f"read-{topic}", "enable.auto.commit": False,
                        "isolation.level": "read_committed"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        if md.error is not None and is_authorization_error(md.error):
            raise access_denied(conf, md.error, "consumer", topic)
        wanted = md.partitions if partitions is None else set(partitions) & set(md.partitions)
        ranges = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in wanted}
        return read_range(consumer, topic, ranges, timeout_s, conf)
    finally:
        consumer.close()
