"""The incident service's metrics, defined once (bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class IncidentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.alerts = Counter("incidents_alerts_total", "Alerts filed into incidents", registry=r)
        self.suppressed = Counter("incidents_suppressed_alerts_total",
                                  "Alerts muted by a benign verdict (kept on the suppressed topic)", registry=r)
        self.unreadable = Counter("incidents_unreadable_alerts_total",
                                  "Alert-topic records that are not alert documents (kept on the dead-letter topic)",
                                  registry=r)
        self.opened = Counter("incidents_opened_total", "Incidents opened", registry=r)
        self.closed = Counter("incidents_closed_total", "Incidents closed after a quiet period", registry=r)
        self.open = Gauge("incidents_open", "Incidents open now", registry=r)
        self.rules = Gauge("incidents_suppression_rules", "Benign verdicts in force", registry=r)
        self.verdicts = Counter("incidents_verdicts_total", "Analyst verdicts read, by what became of them",
                                ["outcome"], registry=r)
        for outcome in ("applied", "unknown_incident", "unreadable", "ignored"):
            self.verdicts.labels(outcome=outcome)
