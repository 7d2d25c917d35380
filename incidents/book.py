"""The incident book: alerts with the same signature, close together in time, are one incident.

Signature: protocol, service and flag (the record's categories), the two features the model reconstructed
worst, and a severity band (``floor(log2(score / threshold))``). Measured on the 10% file, this keeps
floods and the groups of false alerts apart (see README, "Incidents"). An alert joins the open incident of
its signature unless it comes more than ``gap_ms`` after that incident's last alert (event time); an
incident closes when stream time (the latest alert's event time) passes its last alert by ``gap_ms``.

Feedback: an analyst marks an incident benign. From then on (until the rule expires), an alert of the same
kind (protocol, service, flag and worst feature) that is no more severe than that incident ever was is
suppressed: kept and counted by the caller, never added to an incident. A flood of the same kind is far
more severe and still alerts; that ceiling is what keeps muting false alerts from muting attacks.

Everything here is a pure function of the alerts' order, so state restored from the compacted incidents
topic continues exactly where a crashed process stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from typing import Any

SCHEMA_ID = "kdd-incident/1"
OPEN, UPDATED, CLOSED = "open", "updated", "closed"
SAMPLE_SIZE = 20


def signature(alert: dict[str, Any]) -> tuple[str, ...]:
    cats = alert.get("categories") or {}
    top = [f.get("feature", "") for f in alert.get("top_features", [])[:2]]
    band = int(math.floor(math.log2(max(float(alert["severity"]), 1.0))))
    return (*(str(v) for v in cats.values()), *top, f"severity>=2^{band}")


def kind(alert: dict[str, Any]) -> tuple[str, ...]:
    """What a benign verdict generalises to: the categories and the worst feature."""
    cats = alert.get("categories") or {}
    top = [f.get("feature", "") for f in alert.get("top_features", [])[:1]]
    return (*(str(v) for v in cats.values()), *top)


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
    features: Counter[str] = dataclasses.field(default_factory=Counter)
    labels: Counter[str] = dataclasses.field(default_factory=Counter)
    sample: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def add(self, alert: dict[str, Any], event_ms: int) -> None:
        severity = float(alert["severity"])
        self.alerts += 1
        self.severity_sum += severity
        self.max_severity = max(self.max_severity, severity)
        self.last_seen_ms = max(self.last_seen_ms, event_ms)
        for f in alert.get("top_features", [])[:3]:
            self.features[str(f.get("feature"))] += 1
        if alert.get("label") is not None:
            self.labels[str(alert["label"])] += 1  # evaluation only: never used to group or decide
        if len(self.sample) < SAMPLE_SIZE:
            self.sample.append({"record_id": alert.get("record_id"), **alert.get("source", {})})
        if self.alerts > 1:
            self.status = UPDATED

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID, "incident_id": self.incident_id, "status": self.status,
            "signature": list(self.signature), "kind": list(self.kind),
            "first_seen_ms": self.first_seen_ms, "last_seen_ms": self.last_seen_ms, "alerts": self.alerts,
            "max_severity": self.max_severity, "mean_severity": self.severity_sum / max(1, self.alerts),
            "severity_sum": self.severity_sum, "features": dict(self.features.most_common()),
            "labels": dict(self.labels), "sample": self.sample,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Incident:
        return cls(raw["incident_id"], tuple(raw["signature"]), tuple(raw["kind"]), int(raw["first_seen_ms"]),
                   int(raw["last_seen_ms"]), raw["status"], int(raw["alerts"]), float(raw["severity_sum"]),
                   float(raw["max_severity"]), Counter(raw["features"]), Counter(raw["labels"]), list(raw["sample"]))


@dataclasses.dataclass(frozen=True)
class Rule:
    """A benign verdict: suppress alerts of this kind up to this severity until ``until_ms`` (event time)."""

    incident_id: str
    kind: tuple[str, ...]
    max_severity: float
    until_ms: int


class IncidentBook:
    def __init__(self, gap_ms: int) -> None:
        self.gap_ms = gap_ms
        self.incidents: dict[str, Incident] = {}  # every incident seen, by id (feedback may name a closed one)
        self.open: dict[tuple[str, ...], Incident] = {}  # the open incident of each signature
        self.rules: dict[str, Rule] = {}
        self.stream_ms = 0

    def restore(self, incident: Incident) -> None:
        self.incidents[incident.incident_id] = incident
        if incident.status != CLOSED:
            self.open[incident.signature] = incident
        self.stream_ms = max(self.stream_ms, incident.last_seen_ms)

    def suppressing(self, alert: dict[str, Any], event_ms: int) -> Rule | None:
        k, severity = kind(alert), float(alert["severity"])
        for rule in self.rules.values():
            if rule.kind == k and severity <= rule.max_severity and event_ms <= rule.until_ms:
                return rule
        return None

    def add(self, alert: dict[str, Any], event_ms: int) -> list[Incident]:
        """File an alert; returns the incidents it changed (a closed predecessor and the one it joined)."""
        self.stream_ms = max(self.stream_ms, event_ms)
        sig = signature(alert)
        changed = []
        current = self.open.get(sig)
        if current is not None and event_ms - current.last_seen_ms > self.gap_ms:
            changed.append(self._close(current))
            current = None
        if current is None:
            digest = hashlib.sha1("|".join(sig).encode()).hexdigest()[:10]
            current = Incident(f"inc-{digest}-{event_ms}", sig, kind(alert), event_ms, event_ms)
            self.open[sig] = current
            self.incidents[current.incident_id] = current
        current.add(alert, event_ms)
        changed.append(current)
        return changed

    def close_quiet(self) -> list[Incident]:
        """Close every open incident whose last alert is more than the gap behind stream time."""
        quiet = [inc for inc in self.open.values() if self.stream_ms - inc.last_seen_ms > self.gap_ms]
        return [self._close(inc) for inc in quiet]

    def advance(self, now_ms: int) -> list[Incident]:
        """Move stream time forward without alerts (an idle input), then close what went quiet."""
        self.stream_ms = max(self.stream_ms, now_ms)
        return self.close_quiet()

    def _close(self, incident: Incident) -> Incident:
        incident.status = CLOSED
        self.open.pop(incident.signature, None)
        return incident

    def mark_benign(self, incident_id: str, until_ms: int) -> Rule | None:
        """Apply a benign verdict; None when the incident is unknown (the caller reports it)."""
        incident = self.incidents.get(incident_id)
        if incident is None:
            return None
        rule = Rule(incident_id, incident.kind, incident.max_severity, until_ms)
        self.rules[incident_id] = rule
        return rule
