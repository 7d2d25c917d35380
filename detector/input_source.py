"""Source stage: consume a micro-batch from the input topic, and know which partitions are ours.

Rebalance callbacks run inside ``consume()``, that is between two batches, so a batch is never revoked
half-done; the checkpoint gets a say first (it commits what is finished for the revoked partitions).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition

from core.kafka_io import FatalError, checked_records, next_offsets
from core.poison import PoisonScreen, Skipped
from detector.metrics import DetectorMetrics

__all__ = ["FatalError", "InputBatch", "InputSource"]  # FatalError: core's, raised here on a fatal consumer error

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class InputBatch:
    """One micro-batch and its per-partition accounting: how many records, and the offsets to commit."""

    records: list[Message]
    topic: str
    partitions: np.ndarray  # distinct partitions in the batch
    counts: np.ndarray  # records per partition, aligned with ``partitions``
    offsets: list[TopicPartition]  # next offset per partition: what a commit of this batch writes
    unreadable: tuple[int, ...] = ()  # positions of records whose headers could not be read (dead letters)

    @classmethod
    def of(cls, records: list[Message], unreadable: list[int] | None = None, topic: str = "") -> InputBatch:
        # map over the C methods: no Python bytecode per record (this runs for every record consumed)
        partitions = np.fromiter(map(Message.partition, records), dtype=np.int64, count=len(records))
        parts, counts = np.unique(partitions, return_counts=True)
        return cls(records, records[0].topic() if records else topic, parts, counts, next_offsets(records),
                   tuple(unreadable or ()))

    @property
    def values(self) -> list[bytes | None]:
        return list(map(Message.value, self.records))


class InputSource:
    """The consumer: subscribe, hand out batches, track assignment for readiness and metrics."""

    def __init__(self, conf: dict[str, Any], topic: str, metrics: DetectorMetrics,
                 on_revoke: Callable[[Consumer, list[TopicPartition]], None],
                 on_change: Callable[[], None],
                 prepare: Callable[[Consumer, list[TopicPartition]], None] | None = None) -> None:
        self.conf = conf
        self.topic = topic
        self.metrics = metrics
        self.revoke_hook = on_revoke
        self.changed = on_change
        self.prepare = prepare  # before new partitions are read: may move their start (the conn stage's restore)
        self.assigned: set[tuple[str, int]] = set()
        self.consumer: Consumer | None = None
        self.screen = PoisonScreen()

    def open(self) -> Consumer:
        self.consumer = Consumer(self.conf)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        return self.consumer

    def poll(self, max_records: int, timeout_s: float) -> tuple[list[Message], list[int], list[Skipped]] | None:
        """Records of the next batch, the positions of those whose headers are unreadable, and the undecodable
        batches skipped (``core.poison``); ``None`` when the broker sent nothing at all (idle or unreachable)."""
        if self.consumer is None:
            raise RuntimeError("InputSource.open() was not called")
        msgs = self.consumer.consume(num_messages=max_records, timeout=timeout_s)
        if not msgs:
            return None
        msgs, skipped = self.screen.screen(self.consumer, msgs)
        good, unreadable = checked_records(msgs, self.conf)
        return good, unreadable, skipped

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # A partition paused during an output outage (the checkpoint's keep_alive) may come back paused from a
        # rebalance; a new assignment always starts reading (keep_alive pauses it again while it still waits).
        if self.prepare is not None:
            self.prepare(consumer, partitions)
        consumer.assign(partitions)
        consumer.resume(partitions)
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        self.metrics.assigned.set(len(self.assigned))
        self.changed()
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.revoke_hook(consumer, partitions)
        self.screen.forget(partitions)
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        for p in partitions:
            try:
                self.metrics.lag.remove(p.topic, str(p.partition))
            except KeyError:
                pass
        self.metrics.assigned.set(len(self.assigned))
        self.changed()
        log.info("revoked %s", sorted(p.partition for p in partitions))

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()  # leaves the group so partitions move at once
            self.consumer = None
