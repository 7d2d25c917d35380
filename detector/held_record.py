"""A Zeek record the featurizer holds until its lateness has passed: what an alert or the label tally reads of
its Kafka message, kept without the message itself (small, and it goes into the featurizer's snapshot).

It answers the same calls as ``confluent_kafka.Message`` that the alert builder and the label tally make
(``topic``, ``partition``, ``offset``, ``key``, ``headers``, ``timestamp``), so released records flow through the
same sinks as rows of any other schema.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

from core import headers as h
from core import wire
from core.zeek import Conn
from detector.outputs import cap_text


@dataclasses.dataclass(frozen=True, slots=True)
class HeldRecord:
    source_topic: str
    source_partition: int
    source_offset: int
    record_key: bytes | None
    record_id: str | None
    label: str | None
    kafka_ts: tuple[int, int]  # (timestamp type, ms) as the message had it
    conn: dict[str, Any]  # the connection's identity: uid, endpoints, protocol, community_id

    @classmethod
    def of(cls, msg: Any, conn: Conn) -> HeldRecord:
        hdrs = msg.headers()
        key = msg.key()
        return cls(msg.topic(), msg.partition(), msg.offset(), key[:1024] if key is not None else None,
                   cap_text(wire.record_id(hdrs, key)), cap_text(wire.label(hdrs)), msg.timestamp(),
                   identity(conn))

    # the Message calls that the alert builder and the label tally make
    def topic(self) -> str:
        return self.source_topic

    def partition(self) -> int:
        return self.source_partition

    def offset(self) -> int:
        return self.source_offset

    def key(self) -> bytes | None:
        return self.record_key

    def timestamp(self) -> tuple[int, int]:
        return self.kafka_ts

    def value(self) -> None:
        return None

    def headers(self) -> list[tuple[str, bytes]]:
        out = []
        if self.record_id is not None:
            out.append((h.RECORD_ID, self.record_id.encode()))
        if self.label is not None:
            out.append((h.LABEL, self.label.encode()))
        return out

    def to_json(self) -> list[Any]:
        """Compact: the topic, partition and connection are known where it is restored (:meth:`from_json`)."""
        key = None if self.record_key is None else base64.b64encode(self.record_key).decode()
        return [self.source_offset, key, self.record_id, self.label, *self.kafka_ts]

    @classmethod
    def from_json(cls, raw: list[Any], topic: str, partition: int, conn: Conn) -> HeldRecord:
        offset, key, record_id, label, ts_type, ts_ms = raw
        return cls(topic, partition, int(offset), None if key is None else base64.b64decode(key), record_id, label,
                   (int(ts_type), int(ts_ms)), identity(conn))


def identity(conn: Conn) -> dict[str, Any]:
    """What an alert says of its connection (``incidents.alert_input`` checks it; OCSF endpoints come from it)."""
    return {"uid": conn.uid, "orig_h": conn.orig_h, "orig_p": conn.orig_p, "resp_h": conn.resp_h,
            "resp_p": conn.resp_p, "proto": conn.proto, "community_id": conn.community_id}
