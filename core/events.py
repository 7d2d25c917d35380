"""CloudEvents headers on what the services publish, so a consumer can route an alert, a dead letter or an
incident by its headers without parsing its body (the CloudEvents Kafka protocol binding, binary mode).

The bodies are unchanged: the event's data is the record's value as it always was. Headers: ``ce_specversion``
(1.0), ``ce_type`` (one of the types below, versioned with the body's schema), ``ce_source`` (the service),
``ce_id``, ``ce_time`` and ``content-type``. An id names the event, not the delivery: an alert's id is its input
record's coordinates and the model that scored it, so a batch re-delivered under at-least-once repeats the
same ids and a consumer can drop the duplicates. Built with the CNCF ``cloudevents`` SDK (its Kafka binding).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cloudevents.http import CloudEvent
from cloudevents.kafka import to_binary

ALERT = "kdd-stream-detector.alert.v1"
SHADOW_ALERT = "kdd-stream-detector.shadow-alert.v1"
DEAD_LETTER = "kdd-stream-detector.dead-letter.v1"
INCIDENT = "kdd-stream-detector.incident.v1"
SUPPRESSED_ALERT = "kdd-stream-detector.suppressed-alert.v1"
DETECTOR_SOURCE = "/kdd-stream-detector/detector"
INCIDENTS_SOURCE = "/kdd-stream-detector/incidents"
JSON = "application/json"
BYTES = "application/octet-stream"  # a dead letter's body: whatever the producer sent
PREFIX = "ce_"
CONTENT_TYPE = "content-type"


def headers(event_type: str, source: str, event_id: str, time: str | None = None, content_type: str = JSON
            ) -> list[tuple[str, bytes]]:
    """The binary-mode CloudEvents headers of one event (``time``: ISO 8601, default now)."""
    when = time or dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = CloudEvent({"type": event_type, "source": source, "id": event_id, "time": when,
                        "datacontenttype": content_type}, None)
    return [(k, v) for k, v in to_binary(event, data_marshaller=lambda _: b"").headers.items()]


def content_id(value: bytes) -> str:
    """An id for a record whose content is the event (an incident's new state): the same state, the same id."""
    return hashlib.sha256(value).hexdigest()[:32]


def is_event_header(name: str) -> bool:
    """Headers this module sets: never copied from an input onto an output (an input cannot forge them)."""
    return name.startswith(PREFIX) or name.lower() == CONTENT_TYPE
