"""Hands outputs to the Kafka producer, waiting out a full local queue, and counts what the broker acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Producer

from core.kafka_io import produce
from detector.metrics import DetectorMetrics
from detector.outputs import OutMessage

OnDelivery = Callable[[KafkaError | None, OutMessage], None]


class OutputWriter:
    def __init__(self, producer: Producer, metrics: DetectorMetrics) -> None:
        self.producer = producer
        self.metrics = metrics

    def produce_all(self, outputs: list[OutMessage], on_delivery: OnDelivery) -> None:
        for out in outputs:
            produce(self.producer, out.topic, out.value, out.key, out.headers,
                    lambda err, _msg, out=out: on_delivery(err, out))

    def acked(self, out: OutMessage, now: float) -> None:
        """An output the broker acknowledged: alerts count, and their produce-to-alert latency is observed."""
        if out.kind == "alert":
            self.metrics.alerted.inc()
            if out.event_ts_ms:
                self.metrics.e2e.observe(max(0.0, now - out.event_ts_ms / 1000))

    @staticmethod
    def now() -> float:
        return time.time()
