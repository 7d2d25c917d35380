"""What the sink stages write: one message to produce, whether an alert or a dead letter."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # "alert", "shadow_alert" or "dead_letter"
    reason: str | None = None
    event_ts_ms: int | None = None  # the input record's timestamp: produce-to-alert latency starts there
