"""Hands outputs to the Kafka producer, waiting out a full local queue, and counts what the broker acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from core.kafka import AccessDenied, access_denied
from core.kafka_io import produce
from detector.metrics import DetectorMetrics
from detector.outputs import DEFAULT_MAX_OUTPUT_BYTES, OUTPUT_TOO_LARGE, OutMessage, bounded, too_large

OnDelivery = Callable[[KafkaError | None, OutMessage], None]
# delivery errors that concern one message, not the cluster: retrying the same bytes can never succeed
PER_MESSAGE_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE, KafkaError.INVALID_MSG,
                                KafkaError.INVALID_RECORD})


class OutputWriter:
    def __init__(self, producer: Producer, metrics: DetectorMetrics, dead_letter_topic: str,
                 max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, conf: dict[str, Any] | None = None) -> None:
        self.producer = producer
        self.conf = conf or {}  # the clients' settings (user, group, transactional id): named in a denial
        self.metrics = metrics
        self.dead_letter_topic = dead_letter_topic
        self.max_output_bytes = max_output_bytes

    def produce_all(self, outputs: list[OutMessage], on_delivery: OnDelivery) -> None:
        """Produce every output, each within the byte budget; one the client still refuses for itself (its
        size, an invalid header) becomes an ``output_too_large`` dead letter: never fatal, never retried."""
        limit = self.max_output_bytes
        for out in outputs:
            if out.size > limit:
                self.metrics.too_large.labels(kind=out.kind).inc()
                out = bounded(out, self.dead_letter_topic, limit)
            try:
                produce(self.producer, out.topic, out.value, out.key, out.headers,
                        lambda err, _msg, out=out: on_delivery(err, out), partition=out.partition)
            except KafkaException as exc:
                if out.reason == OUTPUT_TOO_LARGE:
                    raise  # even the small stand-in is refused: not a per-message problem
                self.metrics.too_large.labels(kind=out.kind).inc()
                stand_in = too_large(out, self.dead_letter_topic, limit, f"the client refused it: {exc}")
                produce(self.producer, stand_in.topic, stand_in.value, stand_in.key, stand_in.headers,
                        lambda err, _msg, out=stand_in: on_delivery(err, out))

    def replacement(self, out: OutMessage, err: KafkaError) -> OutMessage | None:
        """The stand-in for an output the broker refused for good (its size, or an invalid record), to retry
        in its place; None when the error may pass (an outage, a leader change): then retry the output."""
        if out.reason == OUTPUT_TOO_LARGE or err.code() not in PER_MESSAGE_ERRORS:
            return None
        self.metrics.too_large.labels(kind=out.kind).inc()
        return too_large(out, self.dead_letter_topic, self.max_output_bytes, f"the broker refused it: {err.str()}")

    def denied(self, err: KafkaError, topic: str | None) -> AccessDenied:
        """A write an ACL refused: exit 3 naming the grant, since retrying cannot succeed."""
        return access_denied(self.conf, err, "producer", topic)

    def acked(self, out: OutMessage, now: float) -> None:
        """An output the broker acknowledged: alerts count, and their produce-to-alert latency is observed."""
        if out.kind == "alert":
            self.metrics.alerted.inc()
            if out.event_ts_ms:
                self.metrics.e2e.observe(max(0.0, now - out.event_ts_ms / 1000))

    @staticmethod
    def now() -> float:
        return time.time()
