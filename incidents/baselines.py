"""What normal looks like, per kind: each kind's ordinary alert rate, learned from the alert stream.

Priority's rate evidence asks "is this many alerts a minute unusual?". Against a constant (one alert per
``--gap-s``) a normal service that always raises 30 false alerts a minute pages every hour, and a verdict given
on one of its quiet minutes breaks on its next busy one. Against its *kind's own rate*, the same service is
ordinary, while a burst of a kind that is usually quiet (or ten times a busy kind's rate) still pages.

The estimate, per kind (protocol, service, flag and worst feature: what a verdict covers): alerts per minute
*in the minutes the kind was active*, both counts forgotten with a half-life (``--baseline-half-life-s``, one
hour of event time by default), so the rate follows the traffic of the last hour or two. Priority's rate
evidence is conditioned on a minute having an alert, so it is compared with the Poisson rate whose active
minutes hold that mean; a service busy twenty minutes an hour is judged by its busy minutes, not diluted by
its quiet ones. It is event time throughout, so a replay and a restart give the same numbers.

An attacker controls part of the traffic and would like to teach a kind a high rate, then flood it. Four bounds,
each attacked in ``tests/unit/test_baselines.py`` and ``tests/kafka/test_incident_trust.py``:

- **Only ordinary alerts teach.** An alert teaches its kind only if its score is ordinary among alerts: its
  conditional tail ``q = (1 - normal_rank) / threshold_fpr`` (uniform on (0, 1) for normal traffic that crossed
  the line, see ``incidents.priority``) is at least ``TEACH_Q``. Normal traffic teaches 95% of its alerts and the
  estimate divides by that share, so it stays unbiased; an attack the model finds clearly abnormal teaches
  nothing, however long it lasts. Alerts without calibration ranks (older bundles) teach as ordinary.
- **Bounded influence per minute.** Within one minute of event time a kind teaches at most ``2 x rate + 10``
  alerts (its rate before the minute). A flood of ordinary-looking alerts adds a bounded amount per minute, and
  once a kind has an hour of active minutes behind it, one such minute moves its rate by a few percent.
- **A cap.** The rate in force is at most ``--baseline-max-per-min`` (60 by default): whatever was taught, a
  minute of ``cap + 3 sqrt(cap) + 5`` or more still carries rate evidence (about 90 a minute at the default), and
  the rarity evidence, which no baseline touches, is unchanged.
- **Learning takes minutes.** A kind's first minute teaches at most ten alerts, its next at most 2 x that rate
  + 10, so a fresh service cannot be told a high rate at once. The price: a fresh service still pages a busy
  normal kind in its first minutes, until it has learned it (and then never again, while the kind stays as
  it was).

Alerts a verdict suppressed or held do not teach (an analyst's verdict must not also raise what pages), and a
kind's rate decays while it is muted. Memory is bounded: at most ``max_kinds`` kinds, the least recently
taught forgotten first (the service tombstones their state records).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Any

TEACH_Q = 0.05  # an alert teaches only if its conditional tail q is at least this (95% of normal alerts do)
BURST_FACTOR, BURST_EXTRA = 2.0, 10  # a kind teaches at most 2 x rate + 10 alerts per minute of event time
MINUTE_MS = 60_000


def kind_key(kind: tuple[str, ...]) -> str:
    """The state-topic key of a kind's baseline: a digest, so a kind of long hostile strings keeps a short key."""
    return "baseline:" + hashlib.sha1("\x1f".join(kind).encode("utf-8", "replace")).hexdigest()[:20]


def teaches(normal_rank: float | None, threshold_fpr: float | None) -> bool:
    """Whether an alert's score is ordinary among alerts (see the module docstring)."""
    if normal_rank is None or threshold_fpr is None or threshold_fpr <= 0:
        return True
    return (1.0 - normal_rank) / threshold_fpr >= TEACH_Q


def poisson_upper(mean: float) -> float:
    """A minute's count that a Poisson rate ``mean`` exceeds with about 1% probability (normal approximation,
    plus one for small means): what a kind's normal variation reaches."""
    return mean + 2.326 * math.sqrt(mean) + 1.0


def poisson_rate_given_some(mean_when_active: float) -> float:
    """The Poisson rate whose minutes with at least one alert hold ``mean_when_active`` on average: the root of
    ``lam / (1 - exp(-lam)) = m`` (0 for m <= 1). Priority's rate evidence is conditioned on a minute having an
    alert, so a kind learned over its active minutes is compared on the same footing. Newton's method from
    above converges monotonically (the function is convex)."""
    m = mean_when_active
    if m <= 1.0:
        return 0.0
    lam = m
    for _ in range(30):
        e = math.exp(-lam)
        step = (lam - m * (1.0 - e)) / (1.0 - m * e)
        lam -= step
        if abs(step) < 1e-9 * max(lam, 1.0):
            break
    return max(0.0, lam)


@dataclasses.dataclass
class KindRate:
    """One kind's learned alerts and the minutes it was active in, both forgotten with the half-life, as of
    ``at_ms``; and this minute's teaching, bounded by ``bound`` (set from the rate as the minute began)."""

    kind: tuple[str, ...]
    count: float = 0.0
    active: float = 0.0
    at_ms: int = 0
    minute: int = -1
    taught: int = 0
    bound: int = BURST_EXTRA

    def to_dict(self) -> dict[str, Any]:
        return {"kind": list(self.kind), "count": self.count, "active": self.active, "at_ms": self.at_ms,
                "minute": self.minute, "taught": self.taught, "bound": self.bound}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> KindRate:
        """Raises ValueError/KeyError/TypeError on a record of another shape (skipped and counted at restore)."""
        kind = raw["kind"]
        if not isinstance(kind, list) or not 0 < len(kind) <= 16 or not all(isinstance(k, str) for k in kind):
            raise ValueError("kind must be a list of 1-16 strings")
        reals = [raw["count"], raw["active"]]
        if any(isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e15 for v in reals):
            raise ValueError("count and active must be finite non-negative numbers")
        ints = [raw["at_ms"], raw["minute"], raw["taught"], raw["bound"]]
        if any(isinstance(v, bool) or not isinstance(v, int) or abs(v) >= 2**63 for v in ints):
            raise ValueError("at_ms, minute, taught and bound must be 64-bit integers")
        return cls(tuple(kind), float(reals[0]), float(reals[1]), *ints)


class Baselines:
    """Per-kind alert rates learned from the stream (see the module docstring). All times are event time."""

    def __init__(self, half_life_ms: int = 3_600_000, max_per_min: float = 60.0, max_kinds: int = 10_000) -> None:
        self.half_life_ms = half_life_ms
        self.max_per_min = max_per_min
        self.max_kinds = max_kinds
        self.kinds: dict[tuple[str, ...], KindRate] = {}  # least recently taught first
        self.dirty: set[tuple[str, ...]] = set()  # kinds whose state changed since the last write
        self.forgotten: list[str] = []  # state keys of evicted kinds, to tombstone

    @property
    def enabled(self) -> bool:
        return self.max_per_min > 0

    def _decay(self, rate: KindRate, stream_ms: int) -> None:
        d = 0.5 ** (max(0, stream_ms - rate.at_ms) / self.half_life_ms)
        rate.count, rate.active, rate.at_ms = rate.count * d, rate.active * d, max(rate.at_ms, stream_ms)

    def per_min(self, kind: tuple[str, ...]) -> float:
        """The kind's learned rate in force (a Poisson rate per minute, at most the cap); 0 when off or unseen."""
        rate = self.kinds.get(kind)
        if rate is None or not self.enabled or rate.active <= 0:
            return 0.0
        when_active = rate.count / (1.0 - TEACH_Q) / max(rate.active, 1.0)
        return min(self.max_per_min, poisson_rate_given_some(when_active))

    def learn(self, kind: tuple[str, ...], stream_ms: int) -> bool:
        """Count one ordinary alert of ``kind`` at stream time, within the minute's bound; True if it taught."""
        if not self.enabled:
            return False
        rate = self.kinds.pop(kind, None)
        if rate is None:
            rate = KindRate(kind, at_ms=stream_ms)
            self._evict()
        self.kinds[kind] = rate  # most recently taught last
        minute = stream_ms - stream_ms % MINUTE_MS
        if minute > rate.minute:
            self._decay(rate, stream_ms)
            rate.minute, rate.taught = minute, 0
            rate.bound = int(BURST_FACTOR * self.per_min(kind)) + BURST_EXTRA
            rate.active += 1.0
        if rate.taught >= rate.bound:
            return False
        self._decay(rate, stream_ms)
        rate.count += 1.0
        rate.taught += 1
        self.dirty.add(kind)
        return True

    def _evict(self) -> None:
        while len(self.kinds) >= self.max_kinds:
            old = next(iter(self.kinds))
            del self.kinds[old]
            self.dirty.discard(old)
            self.forgotten.append(kind_key(old))

    # ------------------------------------------------------------------ state
    def restore_kind(self, rate: KindRate) -> None:
        self.kinds.pop(rate.kind, None)
        self._evict()
        self.kinds[rate.kind] = rate

    def forget_key(self, key: str) -> None:
        """A tombstone read at restore."""
        for kind in [k for k in self.kinds if kind_key(k) == key]:
            del self.kinds[kind]

    def take_changes(self) -> tuple[list[KindRate], list[str]]:
        """The kinds to write and the keys to tombstone since the last call (the caller writes them in its
        transaction, so a restart continues from exactly what the committed incidents saw)."""
        changed = [self.kinds[k] for k in sorted(self.dirty) if k in self.kinds]
        gone, self.forgotten, self.dirty = self.forgotten, [], set()
        return changed, gone
