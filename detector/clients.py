"""Kafka client settings for the detector's consumer and producer, and the watch on rejected credentials."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError

from core.kafka import CONSUMER_DEFAULTS, MEMORY_BOUNDS, KafkaConnectError, explain_auth_error, is_auth_error
from core.routing import ROUTED_PRODUCER
from detector.settings import DetectorSettings

log = logging.getLogger(__name__)


def client_configs(settings: DetectorSettings, stats_cb: Callable[[str], None] | None = None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Consumer and producer settings; ``-X`` pass-through settings win over these defaults."""
    base = settings.kafka.client_config()
    consumer = {
        **base,
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": settings.auto_offset_reset,
        "isolation.level": "read_committed",
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 10,
        **MEMORY_BOUNDS,
        **CONSUMER_DEFAULTS,
    }
    if settings.group_instance_id:
        consumer["group.instance.id"] = settings.group_instance_id
    if stats_cb is not None:
        consumer["statistics.interval.ms"] = 5000
        consumer["stats_cb"] = stats_cb
    producer = {
        **base,
        **ROUTED_PRODUCER,  # alerts are keyed by their kind's route: the incident service's partitions
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
        "queue.buffering.max.messages": max(100_000, 4 * settings.batch_size),
    }
    if settings.exactly_once:
        producer["transactional.id"] = settings.effective_transactional_id
        producer["transaction.timeout.ms"] = 60_000
    for conf in (consumer, producer):
        conf.update(settings.kafka.extra)
    return consumer, producer


class AuthWatch:
    """librdkafka retries rejected credentials forever and reports them as non-fatal errors. This remembers
    the first rejection since the last progress, so the loop can exit 3 instead of idling "healthy"."""

    def __init__(self, client_config: dict[str, Any], timeout_s: float) -> None:
        self.client_config = client_config
        self.timeout_s = timeout_s
        self.first: tuple[float, KafkaError] | None = None

    def on_client_error(self, err: KafkaError) -> None:
        """The clients' ``error_cb``: connection trouble is retried by the client; rejections are remembered."""
        if is_auth_error(err):
            if self.first is None:
                self.first = (time.monotonic(), err)
        elif err.fatal():
            log.error("Kafka client fatal error: %s", err)
        else:
            log.debug("Kafka client: %s", err)

    def progress(self) -> None:
        """The broker served us: any rejection seen was transient."""
        self.first = None

    def check(self) -> None:
        """Rejected credentials for longer than the connect timeout (e.g. a rotated secret) end the process."""
        if self.first is not None:
            since, err = self.first
            if time.monotonic() - since >= self.timeout_s:
                raise KafkaConnectError(explain_auth_error(self.client_config, err))
