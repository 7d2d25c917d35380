"""The one range of time every service accepts: event times, verdict times and timestamps in state records.

Python's datetime covers years 1 to 9999 and raises past either end, and an ISO string with an offset can step
outside after parsing (``0001-01-01T00:00:00+14:00`` is year 0 in UTC: ``ValueError: year 0 is out of range``,
issue 31 item 2). A time read from outside is therefore checked against one bounded range here, once, and a
value outside it is an error that names the field, never an exception from deep inside a formatter.

The range is 1970-01-01 (epoch 0, where Kafka timestamps start) to 2100-01-01: wide enough for any capture
(KDD99 dates from 1998, UNSW-NB15 from 2015) and for a verdict lasting years, narrow enough that every
conversion of it is defined everywhere.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

MIN_MS = 0  # 1970-01-01T00:00:00Z
MAX_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


class TimeRangeError(ValueError):
    """A time value outside the accepted range, or not a time at all (the message names the field)."""


def check_ms(value: Any, name: str) -> int:
    """An epoch-millisecond value within the range; ``TimeRangeError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TimeRangeError(f"{name} must be a finite number of epoch milliseconds, got {value!r:.40}")
    if not MIN_MS <= value < MAX_MS:
        raise TimeRangeError(f"{name} must be between 1970 and 2100 in epoch milliseconds, got {value!r:.40}")
    return int(value)


def parse_iso_ms(text: Any, name: str) -> int:
    """An ISO 8601 time (naive means UTC) as epoch milliseconds within the range; ``TimeRangeError`` otherwise."""
    if not isinstance(text, str) or len(text) > 64:
        raise TimeRangeError(f"{name} must be an ISO 8601 string of at most 64 characters")
    try:
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        ms = math.floor(when.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise TimeRangeError(f"{name} is not an ISO 8601 time within 1970-2100: {text[:64]!r}") from None
    return check_ms(ms, name)


def iso(ms: Any) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC (millisecond precision), or None outside the range."""
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms) or not MIN_MS <= ms < MAX_MS:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")
