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

import logging
import threading
import time
from collections import Counter as Tally
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from detector import parsing
from detector.config import DetectorConfig
from detector.metrics import DetectorMetrics, HealthServer
from detector.outputs import OutMessage, build_alert, build_dead_letter
from producer.kafka_options import ensure_topic, redacted
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
            positions = [p for p in consumer.position(partitions) if p.offset >= 0]
            if positions:
                try:
                    consumer.commit(offsets=positions, asynchronous=False)
                except KafkaException as exc:
                    log.warning("commit on revocation failed (records will be re-delivered): %s", exc)
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
    def start(self) -> None:
        consumer_conf, producer_conf = client_configs(self.config, self.metrics.observe_stats)
        log.info("consumer %s", redacted({k: v for k, v in consumer_conf.items() if k != "stats_cb"}))
        self.server = HealthServer(self.metrics, self.config.metrics_port, self.ready, host=self.config.metrics_host)
        self.server.start()
        self.producer = Producer(producer_conf)
        admin_conf = self.config.kafka.client_config()
        self._ensure_output_topics(admin_conf)
        if self.config.exactly_once:
            self.producer.init_transactions(60)
        self.consumer = Consumer(consumer_conf)
        self.consumer.subscribe([self.config.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self._warm_up()

    def _ensure_output_topics(self, admin_conf: dict[str, Any]) -> None:
        from confluent_kafka.admin import AdminClient

        md = AdminClient(admin_conf).list_topics(timeout=30)
        brokers = max(1, len(md.brokers))
        src = md.topics.get(self.config.input_topic)
        partitions = len(src.partitions) if src is not None and src.error is None else 1
        if src is None or src.error is not None:
            log.warning("input topic %s does not exist yet; waiting for it", self.config.input_topic)
        for topic in (self.config.alert_topic, self.config.dead_letter_topic):
            ensure_topic(admin_conf, topic, partitions, min(3, brokers))

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
        consumer, producer = self.consumer, self.producer
        if consumer is None or producer is None:
            raise RuntimeError("Detector.start() was not called")
        t0 = time.perf_counter()
        msgs = consumer.consume(num_messages=self.config.batch_size, timeout=self.config.batch_timeout_ms / 1000)
        producer.poll(0)
        if not msgs:
            return 0
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
        last: dict[tuple[str, int], int] = {}
        per_partition: Tally[tuple[str, int]] = Tally()
        for r in records:
            tp = (r.topic(), r.partition())
            last[tp] = r.offset()
            per_partition[tp] += 1
        parsed = parsing.parse_batch(values, self.config.max_message_bytes)
        t_parse = time.perf_counter()

        outputs: list[OutMessage] = []
        scores = np.zeros(0, np.float32)
        if len(parsed.index):
            ids, unknown = self.scorer.preprocessor.encode_categories(parsed.features)
            result = self.scorer.score_arrays(self.scorer.preprocessor.numeric_matrix(parsed.features)
                                              .astype(np.float32), ids)
            scores = result.score
            flagged = np.flatnonzero(scores > self.threshold)
            if len(flagged):
                reasons = self.scorer.explain(result, flagged, parsed.features.iloc[flagged].reset_index(drop=True))
                now_ms = int(time.time() * 1000)
                for k, j in enumerate(flagged):
                    outputs.append(build_alert(records[int(parsed.index[j])], self.config.alert_topic,
                                               float(scores[j]), self.threshold, self.version, reasons[k], now_ms))
            for name, count in zip(CATEGORICAL, unknown, strict=True):
                if count:
                    m.unknown_categories.labels(feature=name).inc(int(count))
        for rej in parsed.rejections:
            outputs.append(build_dead_letter(records[rej.index], self.config.dead_letter_topic, rej.code, rej.detail))
        t_score = time.perf_counter()

        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]
        if self.config.exactly_once:
            delivered = self._deliver_transaction(outputs, offsets)
            t_produce = t_commit = time.perf_counter()
        else:
            delivered = self._deliver(outputs)
            t_produce = time.perf_counter()
            if delivered:
                self._commit(offsets)
            t_commit = time.perf_counter()
        if not delivered:
            return  # shutting down mid-outage: nothing committed, the batch will be re-delivered

        for (topic, part), n in per_partition.items():
            m.consumed.labels(topic=topic, partition=str(part)).inc(n)
        m.scored.inc(len(parsed.index))
        observe_many(m.score, scores)
        for code, n in Tally(r.code for r in parsed.rejections).items():
            m.dead_lettered.labels(reason=code).inc(n)
        m.batch_size.observe(len(records))
        for stage, seconds in (("poll", t_poll - t0), ("parse", t_parse - t_poll), ("score", t_score - t_parse),
                               ("produce", t_produce - t_score), ("commit", t_commit - t_produce)):
            m.stage.labels(stage=stage).observe(seconds)

    # ---------------------------------------------------------------------------------- delivery
    def _produce_all(self, outputs: list[OutMessage], on_delivery: Any) -> None:
        producer = self.producer
        assert producer is not None  # noqa: S101 - set in start()
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

    def _deliver(self, outputs: list[OutMessage]) -> bool:
        """Produce and wait for every acknowledgement; retry failures until they succeed or we stop."""
        producer = self.producer
        assert producer is not None  # noqa: S101
        pending = outputs
        backoff = 0.1
        paused = False
        while pending:
            failed: list[OutMessage] = []
            errors: Tally[str] = Tally()

            def on_delivery(err: KafkaError | None, out: OutMessage, failed: list[OutMessage] = failed,
                            errors: Tally[str] = errors) -> None:
                if err is None:
                    self._acked(out, time.time())
                else:
                    failed.append(out)
                    errors[err.name()] += 1

            self._produce_all(pending, on_delivery)
            while producer.flush(1.0) > 0:
                if self.stop_event.is_set() and paused:
                    return False
            if not failed:
                break
            if not paused:
                paused = True
                self.metrics.paused.set(1)
            self.metrics.produce_retries.inc()
            log.warning("%d of %d outputs not delivered (%s); input paused, retrying in %.1fs", len(failed),
                        len(pending), dict(errors), backoff)
            if self.stop_event.wait(backoff):
                return False
            backoff = min(backoff * 2, self.config.retry_backoff_max_s)
            pending = failed
        if paused:
            self.metrics.paused.set(0)
            log.info("outputs delivered again; resuming input")
        return True

    def _commit(self, offsets: list[TopicPartition]) -> None:
        assert self.consumer is not None  # noqa: S101
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # e.g. the group rebalanced while outputs were retried: the batch is re-delivered elsewhere
            log.warning("offset commit failed, batch will be re-delivered (at-least-once): %s", exc)

    def _deliver_transaction(self, outputs: list[OutMessage], offsets: list[TopicPartition]) -> bool:
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None  # noqa: S101
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
