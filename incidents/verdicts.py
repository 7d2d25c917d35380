"""Benign verdicts, bounded in what they can mute: the kind, the severity and the rate the analyst saw.

A verdict names an incident. It becomes a rule over that incident's *kind* (protocol, service, flag and the
worst feature), up to the highest severity the incident reached, for a limited time, and at most at the rate
the incident ran at (the 99% upper bound of its alerts per minute, times a margin). The rate bound is what
keeps "this is fine" from hiding an attack: a single harmless echo reply marked benign covers ten echo replies
a minute, not a smurf flood of the same kind (issue 20: one such verdict once muted 81,827 smurf alerts on
traffic the project had never seen, because severity alone was the bound).

How the rate is held, exactly and in bounded memory: event time is cut into windows of one minute. An alert
the rule matches is *held* (not yet suppressed) while its window is open. When the window ends with no more
alerts than the allowance, the held alerts are suppressed: kept on the suppressed topic and counted. When the
window's count passes the allowance (of all verdicts on that kind together), they are broken for that window
and for every next one in which the kind still comes too fast: every held alert and every later one is filed
into an incident flagged ``exceeds_verdict``. So a flood is filed whole, never
partly muted; at most ``allowance`` alerts wait, per rule, for at most a window.

A rule's state (window, count, held alerts) is written to the state topic in the same transaction as the
alerts that changed it, so a restarted service continues exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from core.timebounds import TimeRangeError, check_ms

WINDOW_MS = 60_000
MAX_ALLOWANCE = 100_000  # alerts per window a verdict can cover at most
HOLD_MAX = 100  # alerts held per rule at most: beyond, matching alerts within the allowance are suppressed at once
MAX_TEXT = 500  # analyst name and note, characters kept
BENIGN = "benign"
REVOKE = "revoke"  # takes back the benign verdict on an incident (issue 31 item 14)


class VerdictError(ValueError):
    """A feedback record that is not a readable verdict (the reason names the field)."""


@dataclasses.dataclass(frozen=True)
class VerdictDoc:
    """What an analyst sent: the feedback topic's record, validated."""

    incident_id: str
    until_ms: int
    decided_ms: int
    analyst: str
    note: str
    verdict: str = BENIGN

    @classmethod
    def parse(cls, raw: Any) -> VerdictDoc:
        if not isinstance(raw, dict):
            raise VerdictError(f"a verdict is a JSON object, got {type(raw).__name__}")
        incident_id = raw.get("incident_id")
        if not isinstance(incident_id, str) or not 0 < len(incident_id) <= 200:
            raise VerdictError("incident_id must be a string of 1-200 characters")
        verdict = raw.get("verdict")
        if not isinstance(verdict, str) or len(verdict) > 50:
            raise VerdictError("verdict must be a short string ('benign')")
        until_ms = _epoch_ms(raw, "until_ms", required=verdict != REVOKE) or 0
        decided_ms = _epoch_ms(raw, "decided_ms", required=False)
        analyst, note = raw.get("analyst") or "", raw.get("note") or ""
        if not isinstance(analyst, str) or not isinstance(note, str):
            raise VerdictError("analyst and note must be strings")
        return cls(incident_id, until_ms, decided_ms if decided_ms is not None else 0, analyst[:MAX_TEXT],
                   note[:MAX_TEXT], verdict)


def _epoch_ms(raw: dict[str, Any], name: str, required: bool = True) -> int | None:
    value = raw.get(name)
    if value is None and not required:
        return None
    try:
        return check_ms(value, name)  # 1970-2100: a verdict stamped in year 9999 is refused, not kept until then
    except TimeRangeError as exc:
        raise VerdictError(str(exc)) from None


def rate_upper_bound(alerts: int) -> float:
    """The 99% upper confidence bound on a Poisson mean after seeing ``alerts`` (Wilson-Hilferty).

    What the analyst saw is a count, and a count of one says little about the rate: one alert in a minute is
    consistent with a rate of up to 6.6 a minute. Bounding by the count alone would break a verdict on the
    next minute's ordinary noise; the upper bound does not, and it converges on the count for large counts
    (1 -> 6.6, 10 -> 20.1, 100 -> 126, 1,000 -> 1,076)."""
    n = alerts + 1
    return n * (1.0 - 1.0 / (9.0 * n) + 2.326 / (3.0 * math.sqrt(n))) ** 3


def _int(raw: dict[str, Any], name: str) -> int:
    """An integer field of a state record: finite, within 64 bits (``int(1e400)`` would raise OverflowError)."""
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or abs(value) >= 2**63:
        raise ValueError(f"{name} must be a finite integer, got {value!r:.40}")
    return int(value)


def allowance_for(alerts: int, span_ms: int, margin: float, kind_per_min: float = 0.0) -> int:
    """Alerts per window a verdict covers: the upper bound of the incident's rate per minute (its alerts over
    its span, a span under a minute counted as a minute), or of its kind's learned rate where that is higher
    (``kind_per_min``: ``incidents.baselines``, capped, so no verdict covers more than the cap's normal
    variation unless the incident itself ran faster), times the margin. The kind's part is at most
    ``HOLD_MAX`` a window: within that, every alert of a window is held until the window ends, so a flood's
    first window is filed whole (beyond it, alerts within the allowance are suppressed at once)."""
    seen = rate_upper_bound(alerts) / max(span_ms / 60_000.0, 1.0)
    own = math.ceil(margin * seen * WINDOW_MS / 60_000)
    kinds = min(HOLD_MAX, math.ceil(margin * kind_per_min * WINDOW_MS / 60_000))
    return int(min(MAX_ALLOWANCE, max(1, own, kinds)))


@dataclasses.dataclass
class Rule:
    """A benign verdict in force, with its rate window. ``verdict_id`` is the incident it was given on."""

    verdict_id: str
    kind: tuple[str, ...]
    max_severity: float
    until_ms: int
    allowance: int  # alerts per window
    decided_ms: int
    analyst: str
    note: str
    window_start: int = -1
    seen: int = 0  # matching alerts in the current window
    broken: bool = False  # this window passed the allowance, or the previous one did
    held: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"alert": doc, "event_ms": ms}
    suppressed: int = 0
    broke_through: int = 0

    def matches(self, kind: tuple[str, ...], severity: float, event_ms: int) -> bool:
        return kind == self.kind and severity <= self.max_severity and event_ms <= self.until_ms

    def roll(self, event_ms: int) -> list[dict[str, Any]]:
        """Move to ``event_ms``'s window if it is later; returns the held alerts now suppressed for good."""
        start = event_ms - event_ms % WINDOW_MS
        if start <= self.window_start:
            return []
        released, self.held = self.held, []
        # a broken window keeps the next one broken while its kind still came too fast; a window at or under
        # the allowance (or a gap) heals it
        self.broken = self.broken and self.seen > self.allowance and start == self.window_start + WINDOW_MS
        self.window_start, self.seen = start, 0
        self.suppressed += len(released)
        return released


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"kind": list(self.kind)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Rule:
        """A rule from its state record, every field checked (a forged record must fail here, at restore, where it
        is skipped and counted, not later inside the loop); raises ValueError, KeyError or TypeError."""
        held = raw.get("held", [])
        if not isinstance(held, list) or len(held) > HOLD_MAX or not all(
                isinstance(e, dict) and isinstance(e.get("alert"), dict) for e in held):
            raise ValueError(f"held must be a list of at most {HOLD_MAX} held alerts")
        kind = raw["kind"]
        if not isinstance(kind, list) or not all(isinstance(k, str) for k in kind):
            raise ValueError("kind must be a list of strings")
        max_severity = float(raw["max_severity"])
        if not math.isfinite(max_severity):
            raise ValueError("max_severity must be finite")
        return cls(str(raw["verdict_id"]), tuple(kind), max_severity, _int(raw, "until_ms"),
                   min(MAX_ALLOWANCE, max(1, _int(raw, "allowance"))), _int(raw, "decided_ms"),
                   str(raw["analyst"])[:MAX_TEXT], str(raw["note"])[:MAX_TEXT], _int(raw, "window_start"),
                   _int(raw, "seen"), bool(raw["broken"]),
                   [{"alert": e["alert"], "event_ms": _int(e, "event_ms")} for e in held],
                   _int(raw, "suppressed"), _int(raw, "broke_through"))

    def audit(self) -> dict[str, Any]:
        """Who, when, why and what it covers (no held alerts): for listings and logs."""
        return {k: v for k, v in self.to_dict().items() if k not in ("held", "window_start", "seen", "broken")}


def offer(pool: list[Rule], entry: dict[str, Any], event_ms: int
          ) -> tuple[list[tuple[dict[str, Any], str]], list[dict[str, Any]], str | None]:
    """An alert that the verdicts in ``pool`` all match (same kind, within severity and time).

    Several verdicts on one kind cover the sum of their rates: the alert is held by the first with room in
    this window. When none has room, the kind came faster than all of them together covered: every one of
    them breaks, and what they held is filed with the alert. Returns (entries suppressed for good with their
    verdict, entries to file, the verdict they exceed)."""
    done = [(e, r.verdict_id) for r in pool for e in r.roll(event_ms)]
    broken = next((r for r in pool if r.broken), None)
    if broken is not None:
        for r in pool:
            r.seen += 1
        broken.broke_through += 1
        return done, [entry], broken.verdict_id
    room = next((r for r in pool if r.seen < r.allowance), None)
    if room is not None:
        room.seen += 1
        if len(room.held) >= HOLD_MAX:
            # a verdict on a fast incident: the state record stays bounded; past the allowance, later alerts
            # in this window are still filed
            room.suppressed += 1
            return [*done, (entry, room.verdict_id)], [], None
        room.held.append(entry)
        return done, [], None
    filed: list[dict[str, Any]] = []
    for r in pool:
        r.broken = True
        r.seen += 1
        r.broke_through += len(r.held)
        filed += r.held
        r.held = []
    pool[0].broke_through += 1
    return done, [*filed, entry], pool[0].verdict_id
