"""What the detector writes: alert messages and dead-letter messages, built for a whole batch.

An alert carries what an analyst needs to act without opening another tool: where the record came from
(topic, partition, offset, record id), when it happened and when it was seen, how far over the line it
is, and which features the model could not reconstruct. A dead letter carries the original bytes,
untouched, with the reason and coordinates in headers, so nothing is lost and it can be replayed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA_ID = "kdd-alert/1"
SCHEMA_PATH = Path(__file__).with_name("schemas") / "alert.schema.json"


@dataclasses.dataclass(frozen=True)
class OutMessage:
    """One message to produce; ``source_index`` ties it back to the batch for accounting."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # "alert" or "dead_letter"
    reason: str | None = None
    event_ts_ms: int | None = None


def _iso(ms: int | None) -> str | None:
    if ms is None or ms <= 0:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for k, v in headers or ():
        if k == name and v is not None:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def build_alert(msg: Any, topic: str, score: float, threshold: float, model_version: str,
                top_features: list[dict[str, Any]], now_ms: int) -> OutMessage:
    ts_type, ts = msg.timestamp()
    headers = msg.headers()
    key = msg.key()
    record_id = header(headers, "record_id")
    if record_id is None and key is not None:
        try:
            record_id = key.decode("utf-8")
        except UnicodeDecodeError:
            record_id = None
    label = header(headers, "label")
    doc = {
        "schema": SCHEMA_ID,
        "record_id": record_id,
        "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
        "event_time": _iso(ts if ts_type else None),
        "detection_time": _iso(now_ms),
        "score": float(score),
        "threshold": float(threshold),
        "severity": float(score) / float(threshold),  # unrounded: just over the line is still > 1
        "model_version": model_version,
        "label": label,
        "top_features": top_features,
    }
    out_headers = [("model_version", model_version.encode())]
    if record_id is not None:
        out_headers.append(("record_id", record_id.encode()))
    if label is not None:
        out_headers.append(("label", label.encode()))
    return OutMessage(topic, key, json.dumps(doc, separators=(",", ":")).encode(), out_headers, "alert",
                      event_ts_ms=ts if ts_type else None)


def build_dead_letter(msg: Any, topic: str, reason: str, detail: str) -> OutMessage:
    headers: list[tuple[str, bytes]] = [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail.encode("utf-8", "replace")[:1000]),
        ("dlq.source.topic", str(msg.topic()).encode()),
        ("dlq.source.partition", str(msg.partition()).encode()),
        ("dlq.source.offset", str(msg.offset()).encode()),
    ]
    headers += [(k, v) for k, v in (msg.headers() or []) if v is not None and not k.startswith("dlq.")]
    return OutMessage(topic, msg.key(), msg.value() or b"", headers, "dead_letter", reason=reason)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())
