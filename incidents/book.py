"""The incident book: alerts with the same signature, close together in time, are one incident.

Signature: protocol, service and flag (the record's categories), the two features the model reconstructed
worst, and a severity band (``floor(log2(severity))``). An alert joins the open incident of its signature
unless it comes more than ``gap_ms`` after that incident's last alert (event time); an incident closes when
stream time (the latest alert's event time) passes its last alert by ``gap_ms``.

Each incident carries its priority (``incidents.priority``: Fisher's combination of its alerts' rarity and
their rate) and its triage (``incidents.triage``: page or review, against an hourly budget). Benign verdicts
(``incidents.verdicts``) suppress alerts of the incident's kind up to its severity *and its rate*; alerts
beyond the rate are filed into incidents that name the verdict they broke through (``exceeds_verdict``).

Everything here is a pure function of the alerts' order, so state restored from the compacted incident and
state topics continues exactly where a crashed process stopped. Memory is bounded: closed incidents are
forgotten (and tombstoned by the service) after the retention, labels per incident are capped, verdicts
are capped in number and in what they hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from typing import Any

from core.routing import incident_id_prefix
from incidents.alert_input import AlertIn, alert_from_doc
from incidents.baselines import Baselines, poisson_upper, teaches
from incidents.priority import priority, rarity, rate_per_min
from incidents.triage import HOUR_MS, PAGE, REVIEW, Budget
from incidents.verdicts import WINDOW_MS, Rule, VerdictDoc, allowance_for, offer

INCIDENT_SCHEMA = "kdd-incident/2"
OPEN, UPDATED, CLOSED = "open", "updated", "closed"
SAMPLE_SIZE = 20
MAX_LABELS = 32  # distinct labels counted per incident; the rest under OTHER_LABEL
OTHER_LABEL = "(other)"


def signature(alert: AlertIn) -> tuple[str, ...]:
    band = int(math.floor(math.log2(max(alert.severity, 1.0))))
    return (*alert.categories, *alert.features[:2], f"severity>=2^{band}")


def source_signature(alert: AlertIn) -> tuple[str, ...]:
    """Grouping by entity (``--group-by source``): the originating host and the kind, so one host scanning
    many is one incident ("10.0.0.5 is scanning 400 hosts"); alerts without a connection keep the signature."""
    if alert.conn is None:
        return signature(alert)
    return (f"source {alert.conn['orig_h']}", *kind(alert))


def kind(alert: AlertIn) -> tuple[str, ...]:
    """What a benign verdict generalises to: the categories and the worst feature."""
    return (*alert.categories, *alert.features[:1])


SKETCH_K = 64  # distinct responders: exact up to 64, then a k-minimum-values estimate (about 12% error)


def distinct_sketch(sketch: list[int], value: str) -> list[int]:
    """Add ``value`` to a k-minimum-values sketch (the 64 smallest 64-bit hashes seen): bounded memory,
    deterministic, mergeable; what lets an incident say how many hosts a scanner touched."""
    h = int.from_bytes(hashlib.blake2b(value.encode("utf-8", "replace"), digest_size=8).digest(), "big")
    if h in sketch or (len(sketch) >= SKETCH_K and h >= sketch[-1]):
        return sketch
    return sorted([*sketch, h])[:SKETCH_K]


def distinct_count(sketch: list[int]) -> int:
    if len(sketch) < SKETCH_K:
        return len(sketch)
    return round((SKETCH_K - 1) * 2**64 / (sketch[-1] + 1))


@dataclasses.dataclass
class Incident:
    incident_id: str
    signature: tuple[str, ...]
    kind: tuple[str, ...]
    first_seen_ms: int
    last_seen_ms: int
    status: str = OPEN
    alerts: int = 0
    severity_sum: float = 0.0
    max_severity: float = 0.0
    rarity: float = 0.0  # Fisher's sum of -2 ln q over the alerts (incidents.priority)
    minute_start: int = -1  # the current minute of event time, its alerts, and the busiest minute's
    minute_count: int = 0
    peak_per_min: int = 0
    priority: float = 0.0
    triage: str = REVIEW
    triage_reason: str = "not ranked yet"
    paged_ms: int | None = None
    exceeds_verdict: str | None = None  # the verdict whose rate these alerts broke through
    over_verdict_alerts: int = 0
    resolution: dict[str, Any] | None = None  # the benign verdict given on this incident (who, when, why)
    features: Counter[str] = dataclasses.field(default_factory=Counter)
    labels: Counter[str] = dataclasses.field(default_factory=Counter)
    sample: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    model_version: str | None = None  # the model that scored its latest alert
    sources: Counter[str] = dataclasses.field(default_factory=Counter)  # originator hosts (Zeek alerts)
    destinations: Counter[str] = dataclasses.field(default_factory=Counter)  # responder hosts
    dest_sketch: list[int] = dataclasses.field(default_factory=list)  # distinct responders (distinct_sketch)
    baseline_per_min: float = 0.0  # its kind's learned rate at its latest alert (incidents.baselines)

    def add(self, alert: AlertIn, event_ms: int, gap_ms: int, exceeds: str | None,
            baseline_per_min: float = 0.0) -> None:
        self.alerts += 1
        self.severity_sum += alert.severity
        self.max_severity = max(self.max_severity, alert.severity)
        self.rarity += rarity(alert.normal_rank, alert.threshold_fpr)
        self.first_seen_ms = min(self.first_seen_ms, event_ms)  # a late alert can be the earliest
        self.last_seen_ms = max(self.last_seen_ms, event_ms)
        minute = event_ms - event_ms % 60_000
        if minute > self.minute_start:
            self.minute_start, self.minute_count = minute, 0
        self.minute_count += 1  # a late alert counts in the current minute
        self.peak_per_min = max(self.peak_per_min, self.minute_count)
        self.baseline_per_min = baseline_per_min
        self.priority = priority(self.rarity, self.alerts, self.peak_per_min, gap_ms, baseline_per_min)
        for f in alert.features[:3]:
            if f in self.features or len(self.features) < MAX_LABELS:
                self.features[f] += 1
        if alert.label is not None:  # evaluation only: never used to group or decide
            label = alert.label if alert.label in self.labels or len(self.labels) < MAX_LABELS else OTHER_LABEL
            self.labels[label] += 1
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append({"record_id": alert.record_id, **alert.source,
                                **({"conn": alert.conn} if alert.conn is not None else {})})
        if alert.model_version is not None:
            self.model_version = alert.model_version
        if alert.conn is not None:
            self.dest_sketch = distinct_sketch(self.dest_sketch, alert.conn["resp_h"])
        if alert.conn is not None:  # bounded like labels: the hosts an analyst acts on, most frequent first
            for counter, host in ((self.sources, alert.conn["orig_h"]), (self.destinations, alert.conn["resp_h"])):
                key = host if host in counter or len(counter) < MAX_LABELS else OTHER_LABEL
                counter[key] += 1
        if exceeds is not None:
            self.exceeds_verdict = exceeds
            self.over_verdict_alerts += 1
        if self.alerts > 1 and self.status == OPEN:
            self.status = UPDATED

    @property
    def rate_per_min(self) -> float:
        return rate_per_min(self.alerts, self.last_seen_ms - self.first_seen_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": INCIDENT_SCHEMA, "incident_id": self.incident_id, "status": self.status,
            "priority": round(self.priority, 3),
            "triage": {"decision": self.triage, "reason": self.triage_reason, "paged_ms": self.paged_ms},
            "signature": list(self.signature), "kind": list(self.kind),
            "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms, "alerts": self.alerts,
            "rate_per_min": round(self.rate_per_min, 3), "peak_per_min": self.peak_per_min,
            "minute": [self.minute_start, self.minute_count], "rarity": self.rarity,
            "baseline_per_min": round(self.baseline_per_min, 6),
            "max_severity": self.max_severity, "mean_severity": self.severity_sum / max(1, self.alerts),
            "severity_sum": self.severity_sum, "exceeds_verdict": self.exceeds_verdict,
            "over_verdict_alerts": self.over_verdict_alerts, "resolution": self.resolution,
            "features": dict(self.features.most_common()), "labels": dict(self.labels), "sample": self.sample,
            "model_version": self.model_version, "sources": dict(self.sources.most_common()),
            "destinations": dict(self.destinations.most_common()),
            "distinct_destinations": distinct_count(self.dest_sketch), "dest_sketch": self.dest_sketch,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Incident:
        """The record the service wrote (``to_dict``); raises KeyError/TypeError/ValueError on another shape."""
        if raw.get("schema") != INCIDENT_SCHEMA:
            raise ValueError(f"schema {raw.get('schema')!r} is not {INCIDENT_SCHEMA}")
        triage = raw["triage"]
        inc = cls(str(raw["incident_id"]), tuple(map(str, raw["signature"])), tuple(map(str, raw["kind"])),
                  int(raw["first_seen_ms"]), int(raw["last_seen_ms"]), str(raw["status"]), int(raw["alerts"]),
                  float(raw["severity_sum"]), float(raw["max_severity"]), float(raw["rarity"]),
                  int(raw["minute"][0]), int(raw["minute"][1]), int(raw["peak_per_min"]), float(raw["priority"]),
                  str(triage["decision"]), str(triage["reason"]),
                  None if triage["paged_ms"] is None else int(triage["paged_ms"]),
                  raw["exceeds_verdict"], int(raw["over_verdict_alerts"]), raw["resolution"],
                  Counter({str(k): int(v) for k, v in raw["features"].items()}),
                  Counter({str(k): int(v) for k, v in raw["labels"].items()}), list(raw["sample"])[:SAMPLE_SIZE])
        baseline = float(raw.get("baseline_per_min") or 0.0)  # absent from records before issue 33
        if not math.isfinite(baseline) or baseline < 0:
            raise ValueError("baseline_per_min must be finite and non-negative")
        inc.baseline_per_min = baseline
        version = raw.get("model_version")  # absent from records written before it was kept
        inc.model_version = None if version is None else str(version)[:64]
        inc.sources = Counter({str(k): int(v) for k, v in (raw.get("sources") or {}).items()})
        inc.destinations = Counter({str(k): int(v) for k, v in (raw.get("destinations") or {}).items()})
        sketch = [int(v) for v in (raw.get("dest_sketch") or [])][:SKETCH_K]
        if any(not 0 <= v < 2**64 for v in sketch):
            raise ValueError("dest_sketch holds 64-bit hashes")
        inc.dest_sketch = sorted(set(sketch))
        if inc.status not in (OPEN, UPDATED, CLOSED) or inc.triage not in (PAGE, REVIEW):
            raise ValueError(f"status {inc.status!r} or triage {inc.triage!r} unknown")
        return inc


@dataclasses.dataclass
class Filing:
    """What one alert did: incidents changed, alerts suppressed for good, rules whose state changed."""

    changed: list[Incident] = dataclasses.field(default_factory=list)
    suppressed: list[tuple[dict[str, Any], str]] = dataclasses.field(default_factory=list)  # (alert doc, rule id)
    rules: set[str] = dataclasses.field(default_factory=set)
    held: bool = False
    late: int = 0  # alerts more than the gap behind stream time when filed
    filed: int = 0  # alerts added to incidents (more than one when a broken verdict releases what it held)
    over_verdict: int = 0
    paged: int = 0  # incidents that became pages
    crowded_out: int = 0  # open incidents closed early to stay within max_open


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the service enforces on verdicts, whatever the CLI that sent them allowed."""

    max_verdict_ms: int = 30 * 86_400_000
    max_rules: int = 1_000
    rate_margin: float = 1.5
    max_open: int = 10_000  # open incidents; past it the least recently updated one closes early
    max_incidents: int = 20_000  # incidents kept in memory; past it the oldest closed ones are forgotten
    group_by: str = "signature"  # or "source": the originating host and the kind (alerts with a connection)
    baseline_half_life_ms: int = 3_600_000  # incidents.baselines: how fast a kind's learned rate forgets
    baseline_max_per_min: float = 60.0  # the cap on a learned rate (0: no learning, one alert per gap)


class IncidentBook:
    def __init__(self, gap_ms: int, budget: Budget | None = None, limits: Limits | None = None,
                 retention_ms: int = 7 * 86_400_000, partition: int = 0) -> None:
        self.gap_ms = gap_ms
        self.partition = partition  # of the alert topic: the book holds that partition's kinds
        self.budget = budget or Budget(per_hour=20, floor=2.0)
        self.limits = limits or Limits()
        self.retention_ms = retention_ms
        self.incidents: dict[str, Incident] = {}  # by id, closed ones until the retention (feedback may name them)
        self.open: dict[tuple[str, ...], Incident] = {}  # the open incident of each signature
        self.rules: dict[str, Rule] = {}  # by verdict id (the incident it was given on)
        self.baselines = Baselines(self.limits.baseline_half_life_ms, self.limits.baseline_max_per_min)
        self.stream_ms = 0

    # ------------------------------------------------------------------ restore
    def restore(self, incident: Incident) -> None:
        """Apply one incident record read from the compacted topic, oldest first. Compaction is lazy, so the
        topic can hold several records of one incident: the latest wins, and an earlier open copy must not stay
        behind as the open incident of its signature (issue 31 item 8: a resolved incident came back open)."""
        self.forget(incident.incident_id)
        self.incidents[incident.incident_id] = incident
        if incident.status != CLOSED:
            self.open[incident.signature] = incident
        self.stream_ms = max(self.stream_ms, incident.last_seen_ms)

    def forget(self, incident_id: str) -> None:
        """Drop an incident (a tombstone read at restore, or a newer record replacing it)."""
        old = self.incidents.pop(incident_id, None)
        if old is not None and self.open.get(old.signature) is old:
            del self.open[old.signature]

    def restore_rule(self, rule: Rule) -> None:
        self.rules[rule.verdict_id] = rule

    # ------------------------------------------------------------------ alerts
    def add(self, alert: AlertIn) -> Filing:
        """File one alert: suppress, hold, or add it to its incident (closing a stale predecessor)."""
        event_ms = alert.event_ms
        self.stream_ms = max(self.stream_ms, event_ms)
        filing = Filing()
        pool = self._matching_rules(alert, event_ms)
        if not pool:
            self._file(alert, event_ms, None, filing)
            return filing
        entry = {"alert": alert.compact(), "event_ms": event_ms}
        done, breaking, exceeds = offer(pool, entry, event_ms)
        filing.rules.update(r.verdict_id for r in pool)
        filing.suppressed += [(e["alert"], rule_id) for e, rule_id in done]
        filing.held = not breaking
        for e in breaking:
            filed = alert if e is entry else alert_from_doc(e["alert"], int(e["event_ms"]))
            self._file(filed, filed.event_ms, exceeds, filing)
        return filing

    def _matching_rules(self, alert: AlertIn, event_ms: int) -> list[Rule]:
        if not self.rules:
            return []
        k = kind(alert)
        return [rule for rule in self.rules.values() if rule.matches(k, alert.severity, event_ms)]

    def _file(self, alert: AlertIn, event_ms: int, exceeds: str | None, filing: Filing) -> None:
        sig = source_signature(alert) if self.limits.group_by == "source" else signature(alert)
        if event_ms < self.stream_ms - self.gap_ms:
            filing.late += 1
        current = self.open.get(sig)
        if current is not None and event_ms - current.last_seen_ms > self.gap_ms:
            filing.changed.append(self._close(current))
            current = None
        if current is not None:
            self.open[sig] = self.open.pop(sig)  # most recently updated last: the dict is in LRU order
        else:
            if len(self.open) >= self.limits.max_open:  # e.g. a flood of random signatures
                filing.changed.append(self._close(next(iter(self.open.values()))))
                filing.crowded_out += 1
            current = Incident(self._new_id(sig, event_ms), sig, kind(alert), event_ms, event_ms)
            self.open[sig] = current
            self.incidents[current.incident_id] = current
        k = kind(alert)
        if exceeds is None and teaches(alert.normal_rank, alert.threshold_fpr):
            self.baselines.learn(k, self.stream_ms)
        current.add(alert, event_ms, self.gap_ms, exceeds, self.baselines.per_min(k))
        filing.filed += 1
        filing.over_verdict += exceeds is not None
        if self.budget.due(self.stream_ms):
            self.budget.recompute(inc.priority for inc in self._trailing_hour())
        if current.triage != PAGE:
            current.triage, current.triage_reason = self.budget.decide(current.priority, self.stream_ms)
            if current.triage == PAGE:
                current.paged_ms = self.stream_ms
                filing.paged += 1
        filing.changed.append(current)

    def _new_id(self, sig: tuple[str, ...], event_ms: int) -> str:
        """An id no incident in the book has: the book's partition (``core.routing``: where a verdict on it must
        go), the signature's digest and the first alert's time, with a counter when that is taken. A back-dated
        alert, or one reusing an incident's first timestamp, used to recreate an existing id and overwrite that
        incident on the compacted topic (issue 31 item 9). The counter is a function of the book alone, so a
        restarted service picks the same ids; the partition keeps books' ids apart."""
        digest = hashlib.sha1("|".join(sig).encode("utf-8", "replace")).hexdigest()[:10]
        base = f"{incident_id_prefix(self.partition)}{digest}-{event_ms}"
        candidate, n = base, 1
        while candidate in self.incidents or candidate in self.rules:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _trailing_hour(self) -> list[Incident]:
        since = self.stream_ms - HOUR_MS
        return [inc for inc in self.incidents.values() if inc.last_seen_ms > since and inc.resolution is None]

    # ------------------------------------------------------------------ time
    def close_quiet(self) -> list[Incident]:
        """Close every open incident whose last alert is more than the gap behind stream time."""
        quiet = [inc for inc in self.open.values() if self.stream_ms - inc.last_seen_ms > self.gap_ms]
        return [self._close(inc) for inc in quiet]

    def close_idle(self, now_ms: int, lateness_ms: int) -> list[Incident]:
        """Close every open incident whose last alert is more than the gap *and* the allowed lateness behind the
        wall clock ``now_ms``: what an idle input does. Stream time itself is left alone: it comes from the
        alerts only, so a service that idled (a topic not yet created, a detector that lags) never files the
        alerts that arrive afterwards into incidents that are already past (issue 31 item 10)."""
        horizon = now_ms - self.gap_ms - lateness_ms
        return [self._close(inc) for inc in list(self.open.values()) if inc.last_seen_ms < horizon]

    def settle_idle(self, now_ms: int, lateness_ms: int) -> tuple[list[tuple[dict[str, Any], str]], set[str]]:
        """An idle input: windows that ended more than the allowed lateness ago by the wall clock are over (no
        alert can still arrive in them on time), so what they held is suppressed for good, as a later alert would
        have settled it. Without this, alerts held in the last window before a quiet spell waited for the next
        alert of any kind. Returns (suppressed alerts with their rule, rules changed)."""
        horizon = now_ms - lateness_ms
        suppressed: list[tuple[dict[str, Any], str]] = []
        changed: set[str] = set()
        for rule_id, rule in self.rules.items():
            if rule.held and horizon >= rule.window_start + WINDOW_MS:
                suppressed += [(e["alert"], rule_id) for e in rule.roll(horizon)]
                changed.add(rule_id)
        return suppressed, changed

    def settle_rules(self) -> tuple[list[tuple[dict[str, Any], str]], set[str], set[str]]:
        """Suppress for good what rules held in windows stream time has passed; drop expired rules.

        Returns (suppressed alerts with their rule, rules changed, rules removed)."""
        suppressed: list[tuple[dict[str, Any], str]] = []
        changed: set[str] = set()
        removed: set[str] = set()
        for rule_id, rule in list(self.rules.items()):
            if rule.held and self.stream_ms >= rule.window_start + WINDOW_MS:
                suppressed += [(e["alert"], rule_id) for e in rule.roll(self.stream_ms)]
                changed.add(rule_id)
            if self.stream_ms > rule.until_ms:
                suppressed += [(e["alert"], rule_id) for e in rule.roll(rule.until_ms + WINDOW_MS)]
                del self.rules[rule_id]
                removed.add(rule_id)
        return suppressed, changed - removed, removed

    def prune(self) -> list[str]:
        """Forget closed incidents whose last alert is older than the retention, and the oldest closed ones past
        ``max_incidents``; returns their ids (the service tombstones them)."""
        horizon = self.stream_ms - self.retention_ms
        old = [i for i, inc in self.incidents.items() if inc.status == CLOSED and inc.last_seen_ms < horizon]
        excess = len(self.incidents) - len(old) - self.limits.max_incidents
        if excess > 0:
            gone = set(old)
            old += [i for i, inc in self.incidents.items() if inc.status == CLOSED and i not in gone][:excess]
        for incident_id in old:
            del self.incidents[incident_id]
        return old

    def _close(self, incident: Incident) -> Incident:
        incident.status = CLOSED
        self.open.pop(incident.signature, None)
        return incident

    # ------------------------------------------------------------------ verdicts
    def mark_benign(self, verdict: VerdictDoc) -> tuple[str, Rule | Incident | None]:
        """Apply a benign verdict; returns (outcome, the new rule or None).

        Outcomes: ``applied``, ``unknown_incident``, ``duplicate`` (already in force), ``expired`` (ends before
        stream time), ``too_many_rules``. The duration is clamped to the service's maximum. The incident the
        verdict names is resolved (closed, with who/when/why) so later alerts open a new one."""
        incident = self.incidents.get(verdict.incident_id)
        if incident is None:
            return "unknown_incident", None
        existing = self.rules.get(verdict.incident_id)
        if existing is not None and existing.decided_ms == verdict.decided_ms:
            return "duplicate", existing
        # the longest duration counts from stream time, never from a decided_ms the sender chose: a verdict
        # stamped in a far year would otherwise last until then (issue 31 item 13)
        until = min(verdict.until_ms, self.stream_ms + self.limits.max_verdict_ms)
        if until < self.stream_ms:
            return "expired", None
        if existing is None and len(self.rules) >= self.limits.max_rules:
            return "too_many_rules", None
        rule = Rule(verdict.incident_id, incident.kind, incident.max_severity, until,
                    allowance_for(incident.alerts, incident.last_seen_ms - incident.first_seen_ms,
                                  self.limits.rate_margin, poisson_upper(self.baselines.per_min(incident.kind))),
                    verdict.decided_ms, verdict.analyst, verdict.note)
        self.rules[verdict.incident_id] = rule
        incident.resolution = {"verdict": verdict.verdict, "analyst": verdict.analyst, "note": verdict.note,
                               "decided_ms": verdict.decided_ms, "until_ms": until}
        self._close(incident)
        return "applied", rule


    def revoke(self, verdict: VerdictDoc) -> tuple[str, Filing]:
        """Take back the benign verdict on ``verdict.incident_id``: its rule ends now, what it held is filed (no
        longer covered), and the incident's resolution keeps an audit of who revoked it, when and why. Outcomes:
        ``revoked``, ``not_in_force`` (no such verdict, or it already ended)."""
        filing = Filing()
        rule = self.rules.pop(verdict.incident_id, None)
        if rule is None:
            return "not_in_force", filing
        filing.rules.add(rule.verdict_id)
        for entry in rule.held:
            held = alert_from_doc(entry["alert"], int(entry["event_ms"]))
            self._file(held, held.event_ms, None, filing)
        incident = self.incidents.get(verdict.incident_id)
        if incident is not None and incident.resolution is not None:
            incident.resolution = {**incident.resolution, "revoked": {
                "analyst": verdict.analyst, "note": verdict.note, "decided_ms": verdict.decided_ms,
                "suppressed": rule.suppressed, "broke_through": rule.broke_through}}
            filing.changed.append(incident)
        return "revoked", filing
