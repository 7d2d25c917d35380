"""Settings of ``python -m incidents``, each declared once (see ``core.settings``); Kafka's are ``KafkaSettings``."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

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
    group_id: str = Field("kdd-incidents", min_length=1, description="consumer group")
    transactional_id: str = Field("kdd-incidents", min_length=1,
                                  description="stable id: a restarted instance fences its predecessor at once")
    gap_s: float = Field(300.0, gt=0, le=86_400 * 7,
                         description="alerts of one signature further apart than this (event time) are two incidents")
    idle_close_s: float = Field(60.0, gt=0, description="with no alerts for this long (wall clock), time moves on "
                                                        "so quiet incidents still close")
    batch_size: int = Field(5000, ge=1, le=100_000, description="max alerts per transaction")
    metrics_port: int = Field(9110, ge=0, le=65_535, description="port for /metrics, /healthz, /readyz")
    metrics_host: str = Field("0.0.0.0", description="address to serve metrics on")  # noqa: S104

    @model_validator(mode="after")
    def _distinct(self) -> IncidentSettings:
        topics = [self.alert_topic, self.incident_topic, self.feedback_topic, self.suppressed_topic,
                  self.dead_letter_topic]
        if len(set(topics)) != len(topics):
            raise ValueError(f"{self.describe('alert_topic')}, {self.describe('incident_topic')}, "
                             f"{self.describe('feedback_topic')}, {self.describe('suppressed_topic')} and "
                             f"{self.describe('dlq_topic')} must all differ")
        return self

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.alert_topic}.incidents-dlq"
