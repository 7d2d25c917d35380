"""Settings of ``python -m incidents``, each declared once (see ``core.settings``); Kafka's are ``KafkaSettings``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from core.acl import Grant, creates, topic
from core.kafka import KafkaSettings
from core.settings import Settings


class IncidentSettings(Settings):
    """Turn the alert topic into incidents: one compacted record per incident, updated as alerts arrive."""

    model_config = SettingsConfigDict(env_prefix="INCIDENTS_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    alert_topic: str = Field("kdd-alerts", min_length=1, description="the detector's alert topic")
    incident_topic: str = Field("kdd-incidents", min_length=1,
                                description="compacted topic of incident records, keyed by incident id")
    feedback_topic: str = Field("kdd-feedback", min_length=1, description="analysts' verdicts on incidents")
    suppressed_topic: str = Field("kdd-alerts.suppressed", min_length=1,
                                  description="alerts muted by a benign verdict: kept here, counted, never dropped")
    dlq_topic: str | None = Field(None, description="alerts that are not readable alert documents "
                                                    "(default: ALERT_TOPIC.incidents-dlq)")
    state_topic: str | None = Field(None, description="compacted topic of the service's own state: verdicts in "
                                                      "force with their rate windows, the page budget "
                                                      "(default: INCIDENT_TOPIC.state)")
    ocsf_topic: str | None = Field(None, description="also write OCSF 1.1.0 findings here: a Detection Finding per "
                                   "alert (and its suppression), an Incident Finding per incident change")
    group_id: str = Field("kdd-incidents", min_length=1, description="consumer group")
    transactional_id: str = Field("kdd-incidents", min_length=1,
                                  description="stable id, one per instance of the group (a pod's name): a restarted "
                                  "instance fences its predecessor at once")
    group_instance_id: str | None = Field(
        None, description="static group membership (a pod's name): a restarted instance with the same id takes its "
                          "partitions back without a rebalance or waiting for the session timeout (default: dynamic)")
    gap_s: float = Field(300.0, gt=0, le=86_400 * 7,
                         description="alerts of one signature further apart than this (event time) are two incidents")
    idle_close_s: float = Field(60.0, gt=0, description="with no alerts for this long (wall clock), incidents quiet "
                                "for longer than the gap plus the allowed lateness (wall clock) are closed")
    allowed_lateness_s: float = Field(300.0, ge=0, le=86_400 * 7, description="how far behind the wall clock alerts "
                                      "may arrive (detector lag, a late topic) without changing incidents: an idle "
                                      "service closes an incident only once its last alert is the gap plus this "
                                      "behind the wall clock; stream time itself only moves with alerts")
    page_budget: int = Field(20, ge=1, le=10_000, description="incidents that may page an analyst per hour of event "
                             "time; the rest wait in the review queue")
    min_priority: float = Field(2.0, ge=0, le=1_000, description="the page line's floor: -log10 of the combined "
                                "p-value an incident must reach to page (2 = odds of 1 in 100 under normal traffic)")
    verdict_rate_margin: float = Field(1.5, ge=1, le=100, description="a benign verdict covers the 99% upper bound of "
                                       "the incident's alert rate, or of its kind's learned rate where higher, "
                                       "times this; alerts of its kind beyond that are filed, not suppressed")
    baseline_half_life_s: float = Field(3600.0, ge=1, le=30 * 86_400, description="each kind's alert rate is "
                                        "learned from the stream, forgotten with this half-life of event time "
                                        "(priority's rate evidence is judged against it)")
    baseline_max_per_min: float = Field(60.0, ge=0, le=100_000, description="the cap on a learned rate (alerts a "
                                        "minute): no attacker can teach a kind more; 0 turns learning off (one "
                                        "alert per gap for every kind)")
    max_verdict_s: float = Field(30 * 86_400.0, gt=0, le=365 * 86_400, description="longest a verdict stays in "
                                 "force, whatever it asked for")
    max_verdicts: int = Field(1_000, ge=1, le=100_000, description="benign verdicts in force at most; more are "
                              "refused (counted in incidents_verdicts_total{outcome=\"too_many_rules\"})")
    max_open_incidents: int = Field(10_000, ge=10, le=10_000_000, description="open incidents at most; past it the "
                                    "least recently updated one closes early (memory stays bounded under a flood "
                                    "of new signatures)")
    max_incidents: int = Field(20_000, ge=100, le=10_000_000, description="incidents kept in memory at most (open "
                               "and closed); past it the oldest closed ones are forgotten and tombstoned")
    retention_s: float = Field(7 * 86_400.0, gt=0, le=365 * 86_400, description="closed incidents are forgotten "
                               "(tombstoned on the incident topic) this long after their last alert")
    max_future_skew_s: float = Field(10.0, ge=0, le=86_400, description="an alert whose event time is further "
                                     "ahead of the wall clock than this (and than a tenth of the gap) is filed as "
                                     "happening now (counted), so one forged timestamp moves stream time, and so "
                                     "closes incidents, at most that much early")
    group_by: Literal["signature", "source"] = Field("signature", description="what one incident is: alerts of "
                                                     "one signature, or (source) of one originating host and kind, "
                                                     "for alerts that carry their Zeek connection")
    batch_size: int = Field(5000, ge=1, le=100_000, description="max alerts per transaction")
    metrics_port: int = Field(9110, ge=0, le=65_535, description="port for /metrics, /healthz, /readyz")
    metrics_host: str = Field("0.0.0.0", description="address to serve metrics on")  # noqa: S104

    @model_validator(mode="after")
    def _distinct(self) -> IncidentSettings:
        topics = [self.alert_topic, self.incident_topic, self.feedback_topic, self.suppressed_topic,
                  self.dead_letter_topic, self.state, *([self.ocsf_topic] if self.ocsf_topic else [])]
        if len(set(topics)) != len(topics):
            raise ValueError(f"{self.describe('alert_topic')}, {self.describe('incident_topic')}, "
                             f"{self.describe('feedback_topic')}, {self.describe('suppressed_topic')}, "
                             f"{self.describe('dlq_topic')} and {self.describe('state_topic')} must all differ")
        return self

    @property
    def future_skew_ms(self) -> int:
        """The skew in force: never more than a tenth of the gap. A skew as large as the gap let one alert stamped
        just under it close every open incident at once (issue 31 item 11)."""
        return int(min(self.max_future_skew_s, self.gap_s / 10) * 1000)

    @property
    def state(self) -> str:
        return self.state_topic or f"{self.incident_topic}.state"

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.alert_topic}.incidents-dlq"

    def acls(self) -> list[Grant]:
        """What the incident service does on the cluster (``core.acl``): read alerts and verdicts as its group,
        restore from and write its two compacted topics, write suppressed alerts and dead letters, all in
        transactions under its transactional id. Whoever may WRITE the feedback topic may mute alerts."""
        owned = [self.incident_topic, self.state]
        written = {self.suppressed_topic: "alerts a benign verdict muted (kept, counted)",
                   self.dead_letter_topic: "alerts it cannot read (dead letters)"}
        return [topic(self.alert_topic, "READ", "the alerts it groups"),
                topic(self.feedback_topic, "READ", "analysts' verdicts"),
                Grant("group", self.group_id, "READ", "joins its consumer group, commits offsets in transactions"),
                *(g for t in owned for g in (topic(t, "READ", "restores its state at start"),
                                             topic(t, "WRITE", "its state: incidents; verdicts in force, budget"))),
                *(topic(t, "WRITE", why) for t, why in written.items()),
                Grant("transactional-id", self.transactional_id, "WRITE", "its transactions (exactly once)"),
                *([topic(self.ocsf_topic, "WRITE", "OCSF findings (with --ocsf-topic)")] if self.ocsf_topic else []),
                *creates([*owned, self.feedback_topic, *written, *([self.ocsf_topic] if self.ocsf_topic else [])])]
