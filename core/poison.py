"""Skip a record batch the client can never read, find where it ends, and say so (issue 31 item 4).

A producer can write a batch that the broker accepts and no consumer can decode: an 87 KB zstd batch that
decompresses past ``receive.message.max.bytes`` (the memory bound every consumer keeps, see
``core.kafka.CONSUMER_DEFAULTS``), or one that is simply corrupt. librdkafka then reports ``_BAD_COMPRESSION``
(or ``_BAD_MSG``) at the batch's first offset on every fetch, forever: nothing after it is read, and the
service looks healthy while blind.

The batch's last offset is inside the undecodable bytes, and the client reports the same base offset for any
position inside the batch. So the end is found by probing: seek to base+1, +2, +4, ... until a position
answers with a record (or reaches the high watermark), then bisect between the last position inside and the
first outside. The probes cost O(log n) fetches for a batch of n records, never a fetch per record, and no
record outside the batch is skipped: the search stops at the batch's exact end. Records read by a probe are
not handed on; they are read again after the final seek. The caller turns each :class:`Skipped` into a dead
letter naming the range and commits past it.
"""

from __future__ import annotations

import dataclasses
import logging

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

log = logging.getLogger(__name__)

POISON_CODES = frozenset({KafkaError._BAD_COMPRESSION, KafkaError._BAD_MSG})
REASON = "undecodable_batch"


@dataclasses.dataclass(frozen=True)
class Skipped:
    """Offsets ``[start, end)`` of a partition that could not be decoded and were skipped."""

    topic: str
    partition: int
    start: int
    end: int
    detail: str


@dataclasses.dataclass
class _Search:
    base: int  # the batch's first offset, as the client reports it
    lo: int  # the last position known to be inside the batch
    hi: int | None  # the first position known to be outside, once one is
    probe: int
    detail: str
    step: int = 1


class PoisonScreen:
    """Between ``consume()`` and the records: takes the poisoned batches out and seeks past each."""

    def __init__(self) -> None:
        self.searches: dict[tuple[str, int], _Search] = {}

    def screen(self, consumer: Consumer, msgs: list[Message]) -> tuple[list[Message], list[Skipped]]:
        """The messages to hand on (records and ordinary errors), and the batches skipped for good."""
        if not self.searches and not any(map(Message.error, msgs)):
            return msgs, []  # the common batch: one C-level pass
        keep: list[Message] = []
        done: list[Skipped] = []
        handled: set[tuple[str, int]] = set()  # one answer per partition per consume(): the rest is stale
        for msg in msgs:
            key = (msg.topic(), msg.partition())
            err = msg.error()
            poisoned = err is not None and err.code() in POISON_CODES
            if not poisoned and key not in self.searches:
                keep.append(msg)
                continue
            if key in handled or (err is not None and not poisoned):
                continue
            handled.add(key)
            if poisoned:
                self._inside(key, msg.offset(), str(err))
            else:
                search = self.searches[key]
                search.hi = search.probe if search.hi is None else min(search.hi, search.probe)
            finished = self._next(consumer, key)
            if finished is not None:
                done.append(finished)
        return keep, done

    def _inside(self, key: tuple[str, int], offset: int, detail: str) -> None:
        search = self.searches.get(key)
        if search is None or offset != search.base:
            log.warning("%s[%d]@%d: a batch the client cannot decode (%s): finding its end", *key, offset, detail)
            self.searches[key] = _Search(offset, offset, None, offset, detail[:500])
            return
        search.lo = max(search.lo, search.probe)
        search.step *= 2

    def _next(self, consumer: Consumer, key: tuple[str, int]) -> Skipped | None:
        search = self.searches[key]
        if search.hi is None:
            probe = search.base + search.step
            high = consumer.get_watermark_offsets(TopicPartition(*key), timeout=10, cached=False)[1]
            if probe >= high:
                search.hi = max(high, search.lo + 1)
        if search.hi is not None and search.hi - search.lo <= 1:
            del self.searches[key]
            consumer.seek(TopicPartition(key[0], key[1], search.hi))
            log.warning("%s[%d]: skipped offsets %d-%d (undecodable batch)", *key, search.base, search.hi - 1)
            return Skipped(key[0], key[1], search.base, search.hi, search.detail)
        if search.hi is not None:
            probe = (search.lo + search.hi) // 2
        search.probe = probe
        consumer.seek(TopicPartition(key[0], key[1], probe))
        return None

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions revoked: their searches start over with the next owner."""
        for p in partitions:
            self.searches.pop((p.topic, p.partition), None)
