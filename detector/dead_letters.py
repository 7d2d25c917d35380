"""Dead-letter sink: the original bytes, untouched, with the reason and source coordinates in headers.

Nothing a producer sends is lost: what cannot be parsed is kept where it can be read and replayed. The input's
own headers are carried on, capped (``detector.outputs.cap_headers``, the count of what was cut in
``dlq.headers_cut``); a dead letter that is still too large for the broker becomes an ``output_too_large`` one
with the coordinates only (``detector.outputs.bounded``).
"""

from __future__ import annotations

from typing import Any

from core import events, poison
from core import headers as h
from core.poison import Skipped
from core.wire import Rejection
from detector.outputs import OutMessage, cap_headers


def build_dead_letter(msg: Any, topic: str, reason: str, detail: str) -> OutMessage:
    headers = h.dead_letter_headers(msg, reason, detail)
    headers += events.headers(events.DEAD_LETTER, events.DETECTOR_SOURCE,
                              f"{msg.topic()}/{msg.partition()}/{msg.offset()}", content_type=events.BYTES)
    copied, cut = cap_headers([(k, v) for k, v in (msg.headers() or [])
                               if v is not None and not k.startswith(h.DLQ_PREFIX) and not events.is_event_header(k)])
    headers += copied
    if cut:
        headers.append((h.DLQ_HEADERS_CUT, str(cut).encode()))
    return OutMessage(topic, msg.key(), msg.value() or b"", headers, "dead_letter", reason=reason,
                      source=(str(msg.topic()), int(msg.partition()), int(msg.offset())))


def dead_letters(records: list[Any], rejections: list[Rejection], topic: str) -> list[OutMessage]:
    return [build_dead_letter(records[r.index], topic, r.code, r.detail) for r in rejections]


def skipped_dead_letters(skipped: list[Skipped], topic: str) -> list[OutMessage]:
    """One dead letter per undecodable batch (``core.poison``): no value (none could be read), the offset range
    in ``dlq.source.offset`` and ``dlq.source.end_offset``, so the bytes can still be fetched and examined."""
    return [OutMessage(topic, None, b"", h.skipped_range_headers(s.topic, s.partition, s.start, s.end, poison.REASON,
                                                                 s.detail)
                       + events.headers(events.DEAD_LETTER, events.DETECTOR_SOURCE,
                                        f"{s.topic}/{s.partition}/{s.start}-{s.end}", content_type=events.BYTES),
                       "dead_letter", reason=poison.REASON, source=(s.topic, s.partition, s.start))
            for s in skipped]
