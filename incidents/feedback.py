"""Analysts' verdicts: ``python -m incidents feedback --incident ID [--for-s SECONDS]`` marks an incident benign.

The verdict goes to the feedback topic (keyed by incident id). The incident service then suppresses later
alerts of the same kind that are no more severe than that incident ever was, for the chosen time: they go
to the suppressed topic and are counted, never dropped.
"""

from __future__ import annotations

import json
import time

from confluent_kafka import Producer
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core.kafka import KafkaSettings, check_connection
from core.settings import Settings


class FeedbackSettings(Settings):
    """Mark an incident benign: matching alerts are suppressed (kept and counted) for a while."""

    model_config = SettingsConfigDict(env_prefix="FEEDBACK_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    feedback_topic: str = Field("kdd-feedback", min_length=1, description="the incident service's feedback topic")
    incident: str = Field(..., min_length=1, description="the incident id (from the incident topic)")
    for_s: float = Field(86_400.0, gt=0, le=86_400 * 365, description="how long the verdict suppresses alerts")
    analyst: str = Field("", description="who decided (kept with the verdict)")
    note: str = Field("", description="why (kept with the verdict)")


def send(s: FeedbackSettings) -> dict[str, object]:
    conf = s.kafka.client_config()
    check_connection(conf, s.kafka.connect_timeout_s)
    now_ms = int(time.time() * 1000)
    verdict = {"incident_id": s.incident, "verdict": "benign", "until_ms": now_ms + int(s.for_s * 1000),
               "decided_ms": now_ms, "analyst": s.analyst, "note": s.note}
    producer = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    errors: list[str] = []
    producer.produce(s.feedback_topic, key=s.incident.encode(), value=json.dumps(verdict).encode(),
                     on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
    if producer.flush(30) or errors:
        raise RuntimeError(f"the verdict was not delivered to {s.feedback_topic}: {errors or 'timed out'}")
    return verdict
