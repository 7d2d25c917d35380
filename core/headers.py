"""Kafka header names that travel between the apps: the producer sets them, the detector reads and forwards them.

``record_id`` ties an alert or a dead letter back to its source row; ``label`` is the source file's label,
carried for evaluation only (nothing decides on it); ``model_version`` names the bundle that scored a record.
Dead letters keep their reason and source coordinates in ``dlq.*`` headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

RECORD_ID = "record_id"
LABEL = "label"
MODEL_VERSION = "model_version"
DLQ_PREFIX = "dlq."
DLQ_REASON = "dlq.reason"
DLQ_DETAIL = "dlq.detail"
DLQ_SOURCE_TOPIC = "dlq.source.topic"
DLQ_SOURCE_PARTITION = "dlq.source.partition"
DLQ_SOURCE_OFFSET = "dlq.source.offset"
DLQ_ORIGINAL_REASON = "dlq.original_reason"  # an output_too_large dead letter: what the output was for
DLQ_HEADERS_CUT = "dlq.headers_cut"  # input headers a dead letter dropped or truncated to stay bounded
DLQ_SOURCE_END_OFFSET = "dlq.source.end_offset"  # a skipped range: offsets [dlq.source.offset, this)


def dead_letter_headers(msg: Any, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """Why a consumed record became a dead letter and where it came from: every service's dead letters carry
    the same ``dlq.*`` headers, so one replay tool reads them all (the detail is capped at 1,000 bytes)."""
    return [(DLQ_REASON, reason.encode()), (DLQ_DETAIL, detail.encode("utf-8", "replace")[:1000]),
            (DLQ_SOURCE_TOPIC, str(msg.topic()).encode()), (DLQ_SOURCE_PARTITION, str(msg.partition()).encode()),
            (DLQ_SOURCE_OFFSET, str(msg.offset()).encode())]


def skipped_range_headers(topic: str, partition: int, start: int, end: int, reason: str, detail: str
                          ) -> list[tuple[str, bytes]]:
    """A dead letter for input that could not be read at all (``core.poison``): no value, the range in headers."""
    return [(DLQ_REASON, reason.encode()), (DLQ_DETAIL, detail.encode("utf-8", "replace")[:1000]),
            (DLQ_SOURCE_TOPIC, topic.encode()), (DLQ_SOURCE_PARTITION, str(partition).encode()),
            (DLQ_SOURCE_OFFSET, str(start).encode()), (DLQ_SOURCE_END_OFFSET, str(end).encode())]


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The first value of header ``name`` as text, or None when absent or not UTF-8."""
    for k, v in headers or ():
        if k == name and v is not None:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None
