"""What the sink stages write: one message to produce, whether an alert or a dead letter, never larger than the
broker takes.

An output the broker refuses for its size is not a transient error: retried, it fails again; fatal, it stops
the detector on the same input record after every restart (issue 21: a 170 KB label header of control
characters became a 1 MB alert once JSON-escaped and crash-looped a partition). So every output is checked
against a byte budget before it is produced (:func:`bounded`), and one that is still too large after the
builders' own caps becomes a small dead letter with reason ``output_too_large`` that keeps the source
coordinates (topic, partition, offset), not the payload: the record is still on the input topic.
"""

from __future__ import annotations

import dataclasses

from core import events
from core import headers as h

OUTPUT_TOO_LARGE = "output_too_large"
MAX_TEXT = 256  # characters of a label or record id copied from the input into an output
MAX_COPIED_HEADERS = 16  # input headers a dead letter carries on
MAX_HEADER_VALUE = 1024  # bytes of each copied header's value
DEFAULT_MAX_OUTPUT_BYTES = 900_000  # below librdkafka's and the broker's ~1 MB defaults, with room for framing


@dataclasses.dataclass(frozen=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    kind: str  # "alert", "shadow_alert" or "dead_letter"
    reason: str | None = None
    event_ts_ms: int | None = None  # the input record's timestamp: produce-to-alert latency starts there
    source: tuple[str, int, int] | None = None  # the input record's topic, partition and offset
    partition: int | None = None  # a chosen partition (featurizer state: the input's own); None: by key

    @property
    def size(self) -> int:
        return len(self.value) + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)


def too_large(out: OutMessage, dead_letter_topic: str, limit: int, detail: str = "") -> OutMessage:
    """The small dead letter that stands in for an output the broker would refuse."""
    topic, partition, offset = out.source or ("", -1, -1)
    why = detail or f"{out.kind} of {out.size} bytes exceeds the {limit}-byte output limit"
    hdrs = [(h.DLQ_REASON, OUTPUT_TOO_LARGE.encode()), (h.DLQ_DETAIL, why.encode()[:1000]),
            (h.DLQ_SOURCE_TOPIC, topic.encode()), (h.DLQ_SOURCE_PARTITION, str(partition).encode()),
            (h.DLQ_SOURCE_OFFSET, str(offset).encode())]
    if out.reason:
        hdrs.append((h.DLQ_ORIGINAL_REASON, out.reason.encode()))
    hdrs += events.headers(events.DEAD_LETTER, events.DETECTOR_SOURCE, f"{topic}/{partition}/{offset}/{out.kind}",
                           content_type=events.BYTES)
    return OutMessage(dead_letter_topic, (out.key or b"")[:MAX_TEXT] or None, b"", hdrs, "dead_letter",
                      reason=OUTPUT_TOO_LARGE, source=out.source)


def bounded(out: OutMessage, dead_letter_topic: str, limit: int) -> OutMessage:
    """``out`` itself when it fits in ``limit`` bytes, else its ``output_too_large`` dead letter."""
    if out.size <= limit:
        return out
    return too_large(out, dead_letter_topic, limit)


def cap_text(text: str | None) -> str | None:
    """A label or record id as copied into an output: at most ``MAX_TEXT`` characters."""
    return text if text is None or len(text) <= MAX_TEXT else text[:MAX_TEXT]


def cap_headers(headers: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], int]:
    """Input headers as a dead letter carries them on: at most ``MAX_COPIED_HEADERS``, each value at most
    ``MAX_HEADER_VALUE`` bytes; returns them and how many were dropped or cut."""
    kept = [(k[:MAX_TEXT], v[:MAX_HEADER_VALUE]) for k, v in headers[:MAX_COPIED_HEADERS]]
    cut = len(headers) - len(kept) + sum(len(v) > MAX_HEADER_VALUE or len(k) > MAX_TEXT
                                         for k, v in headers[:MAX_COPIED_HEADERS])
    return kept, cut
