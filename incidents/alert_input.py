"""The alert topic's records, checked before anything reads them: a bad record is a dead letter, never a crash.

Anyone who can write to the alert topic can send anything. The incident service reads a handful of fields;
each is checked for type, finiteness and size here, once, and the book only ever sees an :class:`AlertIn`.
A record that fails names the field in its reason (``AlertError``), so the dead letter says what to fix.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from typing import Any

from core import jsondoc
from core.routing import KIND_PART_CHARS
from core.timebounds import TimeRangeError, check_ms, iso, parse_iso_ms

MAX_TEXT = 256  # characters kept of a label, record id or topic name
MAX_NAME = KIND_PART_CHARS  # characters kept of a category or feature name or value (a kind's route)
MAX_CATEGORIES = 16
MAX_FEATURES = 5


class AlertError(ValueError):
    """Why an alert-topic record is not a usable alert (``reason`` is a short code, the message the detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class AlertIn:
    doc: dict[str, Any]  # the record as sent (kept whole on the suppressed topic)
    record_id: str | None
    event_ms: int
    severity: float
    normal_rank: float | None
    threshold_fpr: float | None
    category_items: tuple[tuple[str, str], ...]
    features: tuple[str, ...]  # worst first
    label: str | None
    source: dict[str, Any]
    at: dict[str, Any]  # where this alert is on the alert topic
    score: float | None = None
    threshold: float | None = None
    model_version: str | None = None
    conn: dict[str, Any] | None = None  # a Zeek connection's uid, endpoints and community_id, when it has them

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(v for _, v in self.category_items)

    def compact(self) -> dict[str, Any]:
        """The alert as a bounded document (a few KB at most): what the suppressed topic and held state keep.

        It is itself a valid alert document; ``alert_at`` points at the original on the alert topic."""
        schema = self.doc.get("schema")
        return {"schema": schema[:MAX_NAME] if isinstance(schema, str) else None,
                "record_id": self.record_id, "source": self.source, "event_time": iso(self.event_ms),
                "severity": self.severity, "normal_rank": self.normal_rank, "threshold_fpr": self.threshold_fpr,
                "categories": dict(self.category_items), "top_features": [{"feature": f} for f in self.features],
                "label": self.label, "alert_at": self.at, "score": self.score, "threshold": self.threshold,
                "model_version": self.model_version, "conn": self.conn}


def _text(value: Any, name: str, limit: int = MAX_TEXT) -> str:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise AlertError("bad_field", f"{name} must be a string, got {type(value).__name__}")


def _number(doc: dict[str, Any], name: str, lo: float, hi: float, nullable: bool = False) -> float | None:
    value = doc.get(name)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AlertError("bad_field", f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise AlertError("bad_field", f"{name} must be finite and within [{lo:g}, {hi:g}], got {value!r}")
    return value


def parse_alert(value: bytes | None, fallback_ms: int, at: dict[str, Any] | None = None) -> AlertIn:
    """Validate one alert-topic record; ``fallback_ms`` (the Kafka timestamp) stands in for a missing event time,
    ``at`` is the record's own topic, partition and offset."""
    try:
        doc = jsondoc.loads(value or b"")
    except ValueError as exc:
        raise AlertError("not_json", f"not a JSON document: {str(exc)[:200]}") from None
    return alert_from_doc(doc, fallback_ms, at)


def alert_from_doc(doc: Any, fallback_ms: int, at: dict[str, Any] | None = None) -> AlertIn:
    """Validate a decoded alert document (see :func:`parse_alert`)."""
    if not isinstance(doc, dict):
        raise AlertError("not_an_object", f"an alert is a JSON object, got {type(doc).__name__}")
    severity = _number(doc, "severity", 0.0, 1e30)
    assert severity is not None
    rank = _number(doc, "normal_rank", 0.0, 1.0, nullable=True)
    fpr = _number(doc, "threshold_fpr", 0.0, 1.0, nullable=True)
    cats = {} if doc.get("categories") is None else doc["categories"]
    if not isinstance(cats, dict) or len(cats) > MAX_CATEGORIES:
        raise AlertError("bad_field", f"categories must be an object of at most {MAX_CATEGORIES} strings")
    top = [] if doc.get("top_features") is None else doc["top_features"]
    if not isinstance(top, list) or not all(isinstance(f, dict) for f in top):
        raise AlertError("bad_field", "top_features must be a list of objects")
    label = doc.get("label")
    record_id = doc.get("record_id")
    model_version = doc.get("model_version")
    return AlertIn(
        doc=doc,
        record_id=None if record_id is None else _text(record_id, "record_id"),
        event_ms=_event_ms(doc.get("event_time"), fallback_ms),
        severity=severity,
        normal_rank=rank,
        threshold_fpr=fpr,
        category_items=tuple((_text(k, "categories", MAX_NAME), _text(v, "categories", MAX_NAME))
                             for k, v in cats.items()),
        features=tuple(_text(f.get("feature", ""), "top_features.feature", MAX_NAME) for f in top[:MAX_FEATURES]),
        label=None if label is None else _text(label, "label"),
        source=_coordinates(doc.get("source"), "source"),
        at=at if at is not None else _coordinates(doc.get("alert_at"), "alert_at"),
        score=_number(doc, "score", 0.0, 1e30, nullable=True),
        threshold=_number(doc, "threshold", 0.0, 1e30, nullable=True),
        model_version=None if model_version is None else _text(model_version, "model_version", MAX_NAME),
        conn=_conn(doc.get("conn")),
    )


def _conn(raw: Any) -> dict[str, Any] | None:
    """A Zeek connection's identity in an alert (``uid``, ``orig_h``:``orig_p`` to ``resp_h``:``resp_p``,
    ``community_id``), every field checked: addresses parsed and written canonically, ports 0-65535."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise AlertError("bad_field", "conn must be an object with uid, orig_h, orig_p, resp_h, resp_p")
    out: dict[str, Any] = {}
    for name in ("orig_h", "resp_h"):
        try:
            out[name] = str(ipaddress.ip_address(_text(raw.get(name), f"conn.{name}", 64)))
        except ValueError:
            raise AlertError("bad_field", f"conn.{name} must be an IP address") from None
    for name in ("orig_p", "resp_p"):
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65_535:
            raise AlertError("bad_field", f"conn.{name} must be a port 0-65535")
        out[name] = value
    for name in ("uid", "community_id"):
        value = raw.get(name)
        out[name] = None if value is None else _text(value, f"conn.{name}", MAX_NAME)
    return out


def clamp_future(alert: AlertIn, now_ms: int, max_skew_ms: int) -> tuple[AlertIn, bool]:
    """An alert stamped further ahead of the wall clock than ``max_skew_ms`` is taken as happening now.

    Stream time is the latest event time seen, and it closes incidents whose last alert is a gap behind it: a
    single record stamped an hour ahead (a wrong clock, or a hostile producer) would close every open incident
    at once. The bound is against the wall clock because any event time can be forged, and a real one is never
    in the future. Returns the alert and whether it was clamped (the caller counts it)."""
    if alert.event_ms <= now_ms + max_skew_ms:
        return alert, False
    return dataclasses.replace(alert, event_ms=now_ms), True


def _coordinates(raw: Any, name: str) -> dict[str, Any]:
    """Topic, partition and offset (each may be absent), checked and bounded."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise AlertError("bad_field", f"{name} must be an object with topic, partition and offset")
    out: dict[str, Any] = {"topic": _text(raw.get("topic") or "", f"{name}.topic")}
    for key in ("partition", "offset"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63):
            raise AlertError("bad_field", f"{name}.{key} must be a non-negative integer")
        out[key] = value
    return out


def _event_ms(text: Any, fallback_ms: int) -> int:
    try:
        if text is None or text == "":
            return check_ms(fallback_ms, "the record's Kafka timestamp (no event_time)")
        return parse_iso_ms(text, "event_time")
    except TimeRangeError as exc:
        raise AlertError("bad_field", str(exc)) from None
