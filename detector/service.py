"""The detector loop: consume a micro-batch, parse, score, publish alerts and dead letters, commit.

Commit order is the contract. At-least-once (default): a batch's alerts and dead letters are produced
and every one acknowledged by the broker before the batch's input offsets are committed; a crash in
between re-delivers the batch, never loses it. Exactly-once (``--exactly-once``): outputs and input
offsets go in one Kafka transaction. Batches are processed synchronously between ``consume()`` calls,
so a rebalance (whose callbacks run inside ``consume()``) never interrupts a half-done batch.

If outputs cannot be written, the loop keeps retrying the same batch with backoff and does not read
more input: memory stays bounded by one batch, nothing is dropped, and it resumes when the broker does.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter as Tally
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import ClusterMetadata

from detector import parsing
from detector.config import DetectorConfig
from detector.metrics import DetectorMetrics, HealthServer
from detector.outputs import OutMessage, build_alert, build_dead_letter
from producer.kafka_options import (
    KafkaConnectError,
    check_connection,
    ensure_topic,
    explain_auth_error,
    is_auth_error,
    redacted,
)
from training.bundle import Bundle, load_bundle
from training.kdd99 import CATEGORICAL, NUMERIC

log = logging.getLogger(__name__)


class FatalError(RuntimeError):
    """Kafka reported an error the detector cannot recover from by retrying (e.g. fenced, unauthorised)."""


def scoring_device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU:{gpus[0].name.rsplit(':', 1)[-1]}" if gpus else "CPU"


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


def client_configs(config: DetectorConfig, stats_cb: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Consumer and producer settings; ``-X`` pass-through settings win over these defaults."""
    base = config.kafka.client_config()
    consumer = {
        **base,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": config.auto_offset_reset,
        "isolation.level": "read_committed",
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 10,
        "queued.max.messages.kbytes": 65536,
    }
    if config.group_instance_id:
        consumer["group.instance.id"] = config.group_instance_id
    if stats_cb is not None:
        consumer["statistics.interval.ms"] = 5000
        consumer["stats_cb"] = stats_cb
    producer = {
        **base,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
        "queue.buffering.max.messages": max(100_000, 4 * config.batch_size),
    }
    if config.exactly_once:
        producer["transactional.id"] = config.effective_transactional_id
        producer["transaction.timeout.ms"] = 60_000
    for conf in (consumer, producer):
        conf.update(config.kafka.extra)
    return consumer, producer


@dataclasses.dataclass
class _Inflight:
    """A batch whose outputs were sent but not yet all acknowledged; its offsets commit after they are."""

    outputs: list[OutMessage]
    offsets: list[TopicPartition]
    account: Any
    failed: list[OutMessage] = dataclasses.field(default_factory=list)
    errors: Tally[str] = dataclasses.field(default_factory=Tally)


class Detector:
    def __init__(self, config: DetectorConfig, bundle: Bundle | None = None) -> None:
        self.config = config
        self.bundle = bundle or load_bundle(config.model)
        self.scorer = self.bundle.scorer()
        self.threshold = self.bundle.threshold
        self.version = self.bundle.version
        self.metrics = DetectorMetrics(self.threshold)
        self.device = scoring_device()
        self.metrics.describe_model(self.bundle.manifest)
        self.metrics.device.info({"device": self.device})
        self.stop_event = threading.Event()
        self.assigned: set[tuple[str, int]] = set()
        self.in_batch = False
        self.warmed = False
        self.server: HealthServer | None = None
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.uncommitted: dict[tuple[str, int], int] = {}
        self.inflight: _Inflight | None = None  # last offsets handed to an async commit
        self.auth_error: tuple[float, KafkaError] | None = None  # first rejection since the last progress

    def ready(self) -> tuple[bool, str]:
        if not self.warmed:
            return False, "model loading"
        if not self.assigned:
            return False, "no partitions assigned"
        return True, f"ready: model {self.version}, {len(self.assigned)} partition(s)"

    # ---------------------------------------------------------------------------------- rebalance
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}
        self.metrics.assigned.set(len(self.assigned))
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        log.info("assigned %s", sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Every finished batch is already committed (or in a committed transaction); a batch is never
        # half-done here because rebalance callbacks run inside consume(), between batches.
        if not self.config.exactly_once and not self.in_batch:
            self._complete_inflight()
            revoked = {(p.topic, p.partition) for p in partitions}
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.uncommitted.items() if (t, p) in revoked]
            if offsets:
                try:
                    consumer.commit(offsets=offsets, asynchronous=False)
                except KafkaException as exc:
                    log.warning("commit on revocation failed (records will be re-delivered): %s", exc)
            for key in revoked:
                self.uncommitted.pop(key, None)
        self.assigned -= {(p.topic, p.partition) for p in partitions}
        for p in partitions:
            try:
                self.metrics.lag.remove(p.topic, str(p.partition))
            except KeyError:
                pass
        self.metrics.assigned.set(len(self.assigned))
        self.metrics.ready.set(1 if self.ready()[0] else 0)
        log.info("revoked %s", sorted(p.partition for p in partitions))

    # -------------------------------------------------------------------------------------- run
    def _on_client_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: connection trouble is retried by the client; rejected credentials
        are remembered so the loop can stop instead of idling "healthy" forever."""
        if is_auth_error(err):
            if self.auth_error is None:
                self.auth_error = (time.monotonic(), err)
        elif err.fatal():
            log.error("Kafka client fatal error: %s", err)
        else:
            log.debug("Kafka client: %s", err)

    def _check_auth(self) -> None:
        """Rejected credentials for longer than the connect timeout (e.g. a rotated secret) end the process."""
        if self.auth_error is not None:
            since, err = self.auth_error
            if time.monotonic() - since >= self.config.kafka.connect_timeout_s:
                raise KafkaConnectError(explain_auth_error(self.config.kafka.client_config(), err))

    def start(self) -> None:
        admin_conf = self.config.kafka.client_config()
        metadata = check_connection(admin_conf, self.config.kafka.connect_timeout_s)
        consumer_conf, producer_conf = client_configs(self.config, self.metrics.observe_stats)
        consumer_conf["on_commit"] = self._on_commit
        for conf in (consumer_conf, producer_conf):
            conf["error_cb"] = self._on_client_error
        log.info("consumer %s", redacted({k: v for k, v in consumer_conf.items()
                                           if k not in ("stats_cb", "error_cb", "on_commit")}))
        self.server = HealthServer(self.metrics, self.config.metrics_port, self.ready, host=self.config.metrics_host)
        self.server.start()
        self.producer = Producer(producer_conf)
        self._ensure_output_topics(admin_conf, metadata)
        if self.config.exactly_once:
            self.producer.init_transactions(60)
        self.consumer = Consumer(consumer_conf)
        self.consumer.subscribe([self.config.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self._warm_up()

    def _ensure_output_topics(self, admin_conf: dict[str, Any], md: ClusterMetadata) -> None:
        brokers = max(1, len(md.brokers))
        src = md.topics.get(self.config.input_topic)
        partitions = len(src.partitions) if src is not None and src.error is None else 1
        if src is None or src.error is not None:
            log.warning("input topic %s does not exist yet; waiting for it", self.config.input_topic)
        for topic in (self.config.alert_topic, self.config.dead_letter_topic):
            ensure_topic(admin_conf, topic, partitions, min(3, brokers), metadata=md)

    def _warm_up(self) -> None:
        """Trace the scoring function before declaring readiness, so the first batch is not slow."""
        self.scorer.score_arrays(np.zeros((1, len(NUMERIC)), np.float32), np.zeros((1, len(CATEGORICAL)), np.int32))
        self.warmed = True
        log.info("model %s (threshold %.6g) ready on %s", self.version, self.threshold, self.device)

    def run(self) -> None:
        if self.consumer is None:
            self.start()
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            try:
                if not self.config.exactly_once and self._complete_inflight():
                    self._final_commit()
                self.consumer.close()  # leaves the group so partitions move at once
            except (KafkaException, RuntimeError) as exc:
                log.warning("consumer close: %s", exc)
            self.consumer = None
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ------------------------------------------------------------------------------------- batch
    def step(self) -> int:
        """One micro-batch; returns the number of input records handled."""
        consumer, producer = self._require(self.consumer), self._require(self.producer)
        t0 = time.perf_counter()
        msgs = consumer.consume(num_messages=self.config.batch_size, timeout=self.config.batch_timeout_ms / 1000)
        producer.poll(0)
        if not msgs:
            self._check_auth()
            self._complete_inflight()  # input is idle: finish the previous batch so its offsets commit now
            return 0
        self.auth_error = None  # the broker served us: any rejection seen was transient
        t_poll = time.perf_counter()
        records: list[Message] = []
        for msg in msgs:
            err = msg.error()
            if err is None:
                records.append(msg)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise FatalError(f"consumer: {err}")
            else:
                log.warning("consumer error: %s", err)
        if not records:
            self._complete_inflight()  # input is idle: finish the previous batch so its offsets commit now
            return 0
        self.in_batch = True
        try:
            self._process(records, t0, t_poll)
        finally:
            self.in_batch = False
        return len(records)

    def _process(self, records: list[Message], t0: float, t_poll: float) -> None:
        m = self.metrics
        values = [r.value() for r in records]
        partitions = np.fromiter((r.partition() for r in records), dtype=np.int64, count=len(records))
        offsets_arr = np.fromiter((r.offset() for r in records), dtype=np.int64, count=len(records))
        topic = records[0].topic()  # one input topic per detector
        parts, counts = np.unique(partitions, return_counts=True)
        offsets = [TopicPartition(topic, int(p), int(offsets_arr[partitions == p].max()) + 1) for p in parts]
        parsed = parsing.parse_batch_safe(values, self.config.max_message_bytes)
        t_parse = time.perf_counter()

        outputs: list[OutMessage] = []
        scores = np.zeros(0, np.float32)
        unknown = np.zeros(len(CATEGORICAL), dtype=np.int64)
        if len(parsed.index):
            ids, unknown = self.scorer.preprocessor.encode_category_columns(parsed.categories)
            result = self.scorer.score_arrays(parsed.numeric.astype(np.float32), ids)
            scores = result.score
            flagged = np.flatnonzero(scores > self.threshold)
            if len(flagged):
                reasons = self.scorer.explain(result, flagged, parsed.columns(flagged))
                now_ms = int(time.time() * 1000)
                for k, j in enumerate(flagged):
                    outputs.append(build_alert(records[int(parsed.index[j])], self.config.alert_topic,
                                               float(scores[j]), self.threshold, self.version, reasons[k], now_ms))
        for rej in parsed.rejections:
            outputs.append(build_dead_letter(records[rej.index], self.config.dead_letter_topic, rej.code, rej.detail))
        t_score = time.perf_counter()

        def account() -> None:
            """Counters move when the batch's outputs are acknowledged, so a clean run counts each record once."""
            for p, n in zip(parts, counts, strict=True):
                m.consumed.labels(topic=topic, partition=str(int(p))).inc(int(n))
            m.scored.inc(len(parsed.index))
            observe_many(m.score, scores)
            for code, n in Tally(r.code for r in parsed.rejections).items():
                m.dead_lettered.labels(reason=code).inc(n)
            for name, count in zip(CATEGORICAL, unknown, strict=True):
                if count:
                    m.unknown_categories.labels(feature=name).inc(int(count))
            m.batch_size.observe(len(records))

        if self.config.exactly_once:
            if self._deliver_transaction(outputs, offsets):
                account()
            t_produce = t_commit = time.perf_counter()
        else:
            # Pipelined: the previous batch's acknowledgements arrived while this one was scored; commit it,
            # then send this batch's outputs and return without waiting (at most two batches in flight).
            self._complete_inflight()
            t_commit = time.perf_counter()
            self.inflight = self._send(outputs, offsets, account)
            t_produce = time.perf_counter()
        for stage, seconds in (("poll", t_poll - t0), ("parse", t_parse - t_poll), ("score", t_score - t_parse),
                               ("produce", t_produce - t_commit if not self.config.exactly_once
                                else t_produce - t_score),
                               ("commit", t_commit - t_score if not self.config.exactly_once else 0.0)):
            m.stage.labels(stage=stage).observe(seconds)

    # ---------------------------------------------------------------------------------- delivery
    def _produce_all(self, outputs: list[OutMessage], on_delivery: Any) -> None:
        producer = self._require(self.producer)
        for out in outputs:
            while True:
                try:
                    producer.produce(out.topic, value=out.value, key=out.key, headers=out.headers,
                                     on_delivery=lambda err, _msg, out=out: on_delivery(err, out))
                    break
                except BufferError:
                    producer.poll(0.05)

    def _acked(self, out: OutMessage, now: float) -> None:
        if out.kind == "alert":
            self.metrics.alerted.inc()
            if out.event_ts_ms:
                self.metrics.e2e.observe(max(0.0, now - out.event_ts_ms / 1000))

    def _send(self, outputs: list[OutMessage], offsets: list[TopicPartition], account: Any) -> _Inflight:
        batch = _Inflight(outputs=outputs, offsets=offsets, account=account)

        def on_delivery(err: KafkaError | None, out: OutMessage) -> None:
            if err is None:
                self._acked(out, time.time())
            else:
                batch.failed.append(out)
                batch.errors[err.name()] += 1

        self._produce_all(outputs, on_delivery)
        self._require(self.producer).poll(0)
        return batch

    def _complete_inflight(self) -> bool:
        """Wait for the in-flight batch's acknowledgements (retrying failures), then commit its offsets.

        Returns False only when shutting down during an output outage: then nothing is committed and the
        batch is re-delivered after restart. While retrying, no new input is read: memory stays bounded.
        """
        batch = self.inflight
        if batch is None:
            return True
        producer = self._require(self.producer)
        backoff = 0.1
        paused = False
        while True:
            while producer.flush(1.0) > 0:
                if self.stop_event.is_set() and paused:
                    return False
            if not batch.failed:
                break
            if not paused:
                paused = True
                self.metrics.paused.set(1)
            self.metrics.produce_retries.inc()
            log.warning("%d of %d outputs not delivered (%s); input paused, retrying in %.1fs", len(batch.failed),
                        len(batch.outputs), dict(batch.errors), backoff)
            if self.stop_event.wait(backoff):
                return False
            backoff = min(backoff * 2, self.config.retry_backoff_max_s)
            retry = self._send(batch.failed, batch.offsets, batch.account)  # its callbacks fill retry.failed
            batch = dataclasses.replace(batch, failed=retry.failed, errors=retry.errors)
        if paused:
            self.metrics.paused.set(0)
            log.info("outputs delivered again; resuming input")
        self._commit(batch.offsets)
        batch.account()
        self.inflight = None
        return True

    def _commit(self, offsets: list[TopicPartition], *, sync: bool = False) -> None:
        """Commit after the batch's outputs are acknowledged. Asynchronous on the hot path (a lost async commit
        only re-delivers records, which at-least-once allows); synchronous on revocation and shutdown."""
        consumer = self._require(self.consumer)
        for tp in offsets:
            self.uncommitted[(tp.topic, tp.partition)] = tp.offset
        try:
            consumer.commit(offsets=offsets, asynchronous=not sync)
            if sync:
                self.uncommitted.clear()
        except KafkaException as exc:
            # e.g. the group rebalanced while outputs were retried: the batch is re-delivered elsewhere
            log.warning("offset commit failed, batch will be re-delivered (at-least-once): %s", exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("asynchronous offset commit failed (records may be re-delivered): %s", err)

    def _final_commit(self) -> None:
        if self.config.exactly_once or not self.uncommitted or self.consumer is None:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.uncommitted.items() if (t, p) in self.assigned]
        if offsets:
            self._commit(offsets, sync=True)

    @staticmethod
    def _require(client: Any) -> Any:
        if client is None:
            raise RuntimeError("Detector.start() was not called")
        return client

    def _deliver_transaction(self, outputs: list[OutMessage], offsets: list[TopicPartition]) -> bool:
        producer, consumer = self._require(self.producer), self._require(self.consumer)
        backoff = 0.1
        while True:
            acked: list[OutMessage] = []
            try:
                producer.begin_transaction()
                self._produce_all(outputs, lambda err, out, acked=acked: acked.append(out) if err is None else None)
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
                producer.commit_transaction(60)
                now = time.time()
                for out in acked:
                    self._acked(out, now)
                if backoff > 0.1:
                    self.metrics.paused.set(0)
                return True
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or not (err.retriable() or err.txn_requires_abort()):
                    raise FatalError(f"transaction failed: {err}") from exc
                log.warning("transaction not committed (%s); aborting and retrying in %.1fs", err, backoff)
                self.metrics.paused.set(1)
                self.metrics.produce_retries.inc()
                try:
                    producer.abort_transaction(30)
                except KafkaException as abort_exc:
                    log.warning("abort_transaction: %s", abort_exc)
                if self.stop_event.wait(backoff):
                    return False
                backoff = min(backoff * 2, self.config.retry_backoff_max_s)
