"""The incident service's metrics, defined once (bounded labels only)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector


class IncidentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)  # process_start_time_seconds: the crash-loop rule counts its changes
        self.alerts = Counter("incidents_alerts_total", "Alerts filed into incidents", registry=r)
        self.suppressed = Counter("incidents_suppressed_alerts_total",
                                  "Alerts muted by a benign verdict (kept on the suppressed topic)", registry=r)
        self.unreadable = Counter("incidents_unreadable_alerts_total",
                                  "Alert-topic records that are not alert documents (kept on the dead-letter topic)",
                                  ["reason"], registry=r)
        for reason in ("not_json", "not_an_object", "bad_field"):
            self.unreadable.labels(reason=reason)
        self.future = Counter("incidents_future_event_times_total", "Alerts stamped further ahead of the wall "
                              "clock than --max-future-skew-s, filed as happening now", registry=r)
        self.held = Gauge("incidents_held_alerts", "Alerts a benign verdict holds until its rate window ends "
                          "(then suppressed, or filed if the window passes the verdict's rate)", registry=r)
        self.over_verdict = Counter("incidents_over_verdict_alerts_total", "Alerts of a muted kind filed because they "
                                    "came faster than the verdict covered", registry=r)
        self.late = Counter("incidents_late_alerts_total", "Alerts filed more than the gap behind stream time (the "
                            "latest event time seen): counted, filed into an incident of their own signature, "
                            "never dropped", registry=r)
        self.crowded_out = Counter("incidents_crowded_out_total", "Open incidents closed early because "
                                   "--max-open-incidents were open (a flood of new signatures)", registry=r)
        self.paged = Counter("incidents_paged_total", "Incidents that paged an analyst", registry=r)
        self.page_line = Gauge("incidents_page_line", "Priority an incident must reach to page (adapts to the "
                               "trailing hour's incidents)", registry=r)
        self.pages_last_hour = Gauge("incidents_pages_last_hour", "Pages in the trailing hour of event time",
                                     registry=r)
        self.page_budget = Gauge("incidents_page_budget", "Pages allowed per hour of event time", registry=r)
        self.bad_state = Counter("incidents_bad_state_records_total", "Records on the incident or state topic that "
                                 "restore skipped (not written by this version)", ["topic"], registry=r)
        self.pruned = Counter("incidents_pruned_total", "Closed incidents forgotten after the retention "
                              "(tombstoned)", registry=r)
        self.opened = Counter("incidents_opened_total", "Incidents opened", registry=r)
        self.closed = Counter("incidents_closed_total", "Incidents closed after a quiet period", registry=r)
        self.open = Gauge("incidents_open", "Incidents open now", registry=r)
        self.rules = Gauge("incidents_suppression_rules", "Benign verdicts in force", registry=r)
        self.verdicts = Counter("incidents_verdicts_total", "Analyst verdicts read, by what became of them",
                                ["outcome"], registry=r)
        for outcome in ("applied", "unknown_incident", "unreadable", "ignored", "duplicate", "expired",
                        "too_many_rules"):
            self.verdicts.labels(outcome=outcome)
