"""The commit contract, in one object per delivery guarantee (as quix-streams' ``checkpointing/checkpoint.py``).

At-least-once: a batch's alerts and dead letters are acknowledged by the broker before its input offsets
are committed, so a crash re-delivers a batch, never loses it. Pipelined: the previous batch's
acknowledgements arrive while the next one is scored, so at most two batches are in flight.
Exactly-once: outputs and input offsets go in one Kafka transaction.

When outputs cannot be written, both retry the same batch with backoff and the loop reads nothing more:
memory stays bounded by one batch, nothing is dropped, and it resumes when the broker does. While it waits,
the consumer keeps polling with its partitions paused, so an outage longer than ``max.poll.interval.ms``
does not evict it from the group (an evicted member's commits fail and its partitions move). A denied write
(an ACL) is not an outage: it ends the process with exit 3 and the grant it needs. Counters move
(``on_done``) only when a batch is committed, so a clean run counts each record once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from core.kafka import is_authorization_error
from core.kafka_io import FatalError, transaction
from detector.delivery import OutputWriter
from detector.metrics import DetectorMetrics
from detector.outputs import OutMessage

log = logging.getLogger(__name__)

Done = Callable[[], None]


class Checkpoint(Protocol):
    blocked: str | None  # why outputs fail, while they do

    def commit(self, outputs: list[OutMessage], offsets: list[TopicPartition], on_done: Done) -> tuple[float, float]:
        """Deliver a batch's outputs and commit its offsets by the contract; returns (produce s, commit s)."""

    def idle(self) -> None:
        """Input is idle: finish what is in flight so its offsets commit now."""

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions are leaving: commit what is finished for them."""

    def close(self) -> None:
        """Shutdown: finish what can be finished and commit it."""


@dataclasses.dataclass
class _Inflight:
    """A batch whose outputs were sent but not yet all acknowledged; its offsets commit after they are."""

    outputs: list[OutMessage]
    offsets: list[TopicPartition]
    on_done: Done
    failed: list[OutMessage] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    denied: tuple[KafkaError, str] | None = None  # an ACL refused a write: (the error, the topic)


class _Retrying:
    """Shared by both guarantees: the pause flag, the retry counter, the backoff, and the consumer kept in its
    group while outputs are retried."""

    def __init__(self, consumer: Consumer, metrics: DetectorMetrics, stop: threading.Event,
                 backoff_max_s: float) -> None:
        self.consumer = consumer
        self.metrics = metrics
        self.stop = stop
        self.backoff_max_s = backoff_max_s
        self.waiting = False  # inside a retry: rebalance callbacks must not start another commit
        self.revoked_while_waiting = False
        self.blocked: str | None = None  # why outputs fail, while they do: /readyz reports it
        self.input_paused = False  # keep_alive paused the assignment: resume it once outputs go through

    def retrying(self, errors: Counter[str]) -> None:
        """Outputs failed: input is paused until they go through, the retry and each error are counted (before any
        wait), and readiness fails with the errors' names until they pass."""
        self.metrics.paused.set(1)
        self.metrics.produce_retries.inc()
        for name, n in errors.items():
            self.metrics.output_errors.labels(error=name).inc(n)
        self.blocked = ", ".join(sorted(errors)) or "unknown error"

    def wait(self, backoff: float) -> float | None:
        """Wait ``backoff`` seconds polling the group; the next backoff, or None when shutting down."""
        deadline = time.monotonic() + backoff
        while (left := deadline - time.monotonic()) > 0:
            if self.stop.wait(min(left, 1.0)):
                return None
            self.keep_alive()
        return min(backoff * 2, self.backoff_max_s)

    def keep_alive(self) -> None:
        """Poll the consumer with every assigned partition paused: it stays a member of its group (librdkafka
        evicts one that does not poll within ``max.poll.interval.ms``) and reads nothing. A record that still
        arrives (from a partition assigned during this very poll) is rewound, so nothing is skipped."""
        consumer = self.consumer
        self.waiting = True
        self.input_paused = True
        try:
            consumer.pause(consumer.assignment())
            first: dict[tuple[str, int], int] = {}
            for msg in consumer.consume(num_messages=1000, timeout=0):
                if msg.error() is None:
                    first.setdefault((msg.topic(), msg.partition()), msg.offset())
            for (topic, partition), offset in first.items():
                consumer.seek(TopicPartition(topic, partition, offset))
            consumer.pause(consumer.assignment())
        except KafkaException as exc:
            log.warning("polling the group during an output outage: %s", exc)
        finally:
            self.waiting = False

    def resume(self) -> None:
        """Outputs go through again: read on."""
        self.metrics.paused.set(0)
        self.blocked = None
        self.unpause()

    def unpause(self) -> None:
        """Resume what keep_alive paused (also after a slow delivery that never failed)."""
        if not self.input_paused:
            return
        self.input_paused = False
        try:
            self.consumer.resume(self.consumer.assignment())
        except KafkaException as exc:
            log.warning("resuming input: %s", exc)


class AtLeastOnce(_Retrying):
    def __init__(self, consumer: Consumer, producer: Producer, writer: OutputWriter, metrics: DetectorMetrics,
                 stop: threading.Event, backoff_max_s: float, in_batch: Callable[[], bool],
                 assigned: Callable[[], set[tuple[str, int]]]) -> None:
        super().__init__(consumer, metrics, stop, backoff_max_s)
        self.producer = producer
        self.writer = writer
        self.in_batch = in_batch
        self.assigned = assigned
        self.inflight: _Inflight | None = None
        self.uncommitted: dict[tuple[str, int], TopicPartition] = {}  # with its metadata (the conn stage's)

    def commit(self, outputs: list[OutMessage], offsets: list[TopicPartition], on_done: Done) -> tuple[float, float]:
        t0 = time.perf_counter()
        self._complete_inflight()
        t1 = time.perf_counter()
        self.inflight = self._send(outputs, offsets, on_done)
        return time.perf_counter() - t1, t1 - t0

    def idle(self) -> None:
        self._complete_inflight()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every finished batch is committed here; a batch is never half-done because rebalance callbacks
        # run inside consume(), between batches. During an output outage (keep_alive) the batch in flight
        # commits when it is delivered; a commit for a partition that moved only re-delivers records there.
        if self.in_batch() or self.waiting:
            return
        self._complete_inflight()
        revoked = {(p.topic, p.partition) for p in partitions}
        offsets = [tp for key, tp in self.uncommitted.items() if key in revoked]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revocation failed (records will be re-delivered): %s", exc)
        for key in revoked:
            self.uncommitted.pop(key, None)

    def close(self) -> None:
        if not self._complete_inflight() or not self.uncommitted:
            return
        assigned = self.assigned()
        offsets = [tp for key, tp in self.uncommitted.items() if key in assigned]
        if offsets:
            self._commit(offsets, sync=True)

    def _send(self, outputs: list[OutMessage], offsets: list[TopicPartition], on_done: Done) -> _Inflight:
        batch = _Inflight(outputs=outputs, offsets=offsets, on_done=on_done)

        def on_delivery(err: KafkaError | None, out: OutMessage) -> None:
            if err is None:
                self.writer.acked(out, self.writer.now())
            else:
                if is_authorization_error(err):
                    batch.denied = (err, out.topic)
                batch.failed.append(self.writer.replacement(out, err) or out)
                batch.errors[err.name()] += 1

        self.writer.produce_all(outputs, on_delivery)
        self.producer.poll(0)
        return batch

    def _complete_inflight(self) -> bool:
        """Wait for the in-flight batch's acknowledgements (retrying failures), then commit its offsets.

        Returns False only when shutting down during an output outage: then nothing is committed and the
        batch is re-delivered after restart.
        """
        batch = self.inflight
        if batch is None:
            return True
        backoff: float | None = 0.1
        paused = False
        while True:
            while self.producer.flush(1.0) > 0:
                if self.stop.is_set() and paused:
                    return False
                self.keep_alive()  # deliveries still being retried by the client (up to message.timeout.ms)
            if batch.denied is not None:
                raise self.writer.denied(*batch.denied)
            if not batch.failed:
                break
            paused = True
            self.retrying(batch.errors)
            log.warning("%d of %d outputs not delivered (%s); input paused, retrying in %.1fs", len(batch.failed),
                        len(batch.outputs), dict(batch.errors), backoff)
            backoff = self.wait(backoff or 0.1)
            if backoff is None:
                return False
            retry = self._send(batch.failed, batch.offsets, batch.on_done)  # its callbacks fill retry.failed
            batch = dataclasses.replace(batch, failed=retry.failed, errors=retry.errors, denied=retry.denied)
        if paused:
            self.resume()
            log.info("outputs delivered again; resuming input")
        self.unpause()  # deliveries were slow (keep_alive paused input) but none failed
        self._commit(batch.offsets)
        batch.on_done()
        self.inflight = None
        return True

    def _commit(self, offsets: list[TopicPartition], *, sync: bool = False) -> None:
        """Asynchronous on the hot path (a lost async commit only re-delivers records, which at-least-once
        allows); synchronous on revocation and shutdown."""
        for tp in offsets:
            self.uncommitted[(tp.topic, tp.partition)] = tp
        if not offsets:  # a batch the conn stage only replayed: nothing new to commit (an empty list commits
            return  # "the stored offsets", of which there are none)
        try:
            self.consumer.commit(offsets=offsets, asynchronous=not sync)
            if sync:
                self.uncommitted.clear()
        except KafkaException as exc:
            # e.g. the group rebalanced while outputs were retried: the batch is re-delivered elsewhere
            log.warning("offset commit failed, batch will be re-delivered (at-least-once): %s", exc)


class ExactlyOnce(_Retrying):
    def __init__(self, consumer: Consumer, producer: Producer, writer: OutputWriter, metrics: DetectorMetrics,
                 stop: threading.Event, backoff_max_s: float) -> None:
        super().__init__(consumer, metrics, stop, backoff_max_s)
        self.producer = producer
        self.writer = writer
        try:
            producer.init_transactions(60)
        except KafkaException as exc:
            if is_authorization_error(exc.args[0]):
                raise writer.denied(exc.args[0], None) from None
            raise

    def commit(self, outputs: list[OutMessage], offsets: list[TopicPartition], on_done: Done) -> tuple[float, float]:
        t0 = time.perf_counter()
        if self._transaction(outputs, offsets):
            on_done()
        return time.perf_counter() - t0, 0.0

    def idle(self) -> None:
        return None  # every batch commits inside commit()

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # committed transactions hold the offsets; an open one is never left between batches. Partitions that
        # move while a transaction is retried (keep_alive) end that batch: its records belong to the new owner,
        # who reads them from the committed offsets, and committing ours too would score them twice.
        if self.waiting:
            self.revoked_while_waiting = True

    def close(self) -> None:
        return None

    def _transaction(self, outputs: list[OutMessage], offsets: list[TopicPartition]) -> bool:
        backoff: float | None = 0.1
        retried = False
        self.revoked_while_waiting = False
        while backoff is not None:
            acked: list[OutMessage] = []
            denied: list[tuple[KafkaError, str]] = []

            def on_delivery(err: KafkaError | None, out: OutMessage, acked: list[OutMessage] = acked,
                            denied: list[tuple[KafkaError, str]] = denied) -> None:
                if err is None:
                    acked.append(out)
                elif is_authorization_error(err):
                    denied.append((err, out.topic))

            try:
                transaction(self.producer, self.consumer, lambda: self.writer.produce_all(outputs, on_delivery),
                            offsets)
                now = self.writer.now()
                for done in acked:
                    self.writer.acked(done, now)
                if retried:
                    self.resume()
                return True
            except KafkaException as exc:
                err = exc.args[0]
                if denied or is_authorization_error(err):
                    raise self.writer.denied(*(denied[0] if denied else (err, None))) from None
                if err.fatal() or not (err.retriable() or err.txn_requires_abort()):
                    raise FatalError(f"transaction failed: {err}") from exc
                log.warning("transaction not committed (%s); aborting and retrying in %.1fs", err, backoff)
                self.retrying(Counter({err.name(): 1}))
                try:
                    self.producer.abort_transaction(30)
                except KafkaException as abort_exc:
                    log.warning("abort_transaction: %s", abort_exc)
                retried = True
                backoff = self.wait(backoff)
                if self.revoked_while_waiting:
                    log.warning("partitions moved while the transaction was retried: the batch is left to their "
                                "new owner (nothing of it was committed)")
                    self.resume()
                    return False
        return False
