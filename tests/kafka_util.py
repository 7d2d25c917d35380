"""Small helpers for tests that talk to the real broker: drain a topic, count what arrived."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message


def drain(
    bootstrap: str,
    topic: str,
    expected: int,
    *,
    timeout_s: float = 120.0,
    group: str | None = None,
    extra: dict[str, object] | None = None,
) -> list[Message]:
    """Consume ``topic`` from the start in a fresh consumer group until ``expected`` messages arrived.

    Returns early only on the expected count; a short count after ``timeout_s`` is returned as is so the
    caller's assertion shows what was missing. Keeps reading 1 s past the count to catch duplicates.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"drain-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "isolation.level": "read_committed",
            **(extra or {}),
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {err}")
                out.append(msg)
            if len(out) >= expected and settle_until is None:
                settle_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return out
