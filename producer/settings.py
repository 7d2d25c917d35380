"""Settings of ``python -m producer``, each declared once (see ``core.settings``); Kafka's are ``KafkaSettings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from core.acl import Grant, creates, topic
from core.kafka import KafkaSettings
from core.records import DATA_ENV, default_data_path
from core.settings import Settings


class ProducerSettings(Settings):
    """Replay a file of connection records onto a Kafka topic."""

    model_config = SettingsConfigDict(env_prefix="PRODUCER_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topic: str = Field("kdd-connections", min_length=1, description="topic to write to")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV,
                       description="data file (gz or plain)")
    schema_name: str = Field("kdd99", validation_alias="PRODUCER_SCHEMA", json_schema_extra={"flag": "--schema"},
                             description="record schema of the file: a shipped name (kdd99, nsl_kdd) or a schema file")
    format: Literal["csv", "json"] = Field(
        "csv", description="csv: the source line without its label; json: an object with the named fields")
    rate: float = Field(0.0, ge=0, description="records per second, 0 = unlimited")
    limit: int | None = Field(None, ge=0, description="stop after N records")
    shuffle: bool = Field(False, description="replay in a seeded random order (reads the whole file)")
    seed: int = Field(0, description="seed for --shuffle and sampling")
    loop: bool = Field(False, description="replay endlessly")
    anomaly_fraction: float | None = Field(None, ge=0, lt=1,
                                           description="subsample attack rows to this share of the stream, e.g. 0.01")
    strict: bool = Field(False, description="a malformed input line is fatal (default: count, skip)")
    partitions: int = Field(6, ge=1, description="partitions if creating the topic")
    replication_factor: int = Field(1, ge=1, description="replication factor if creating the topic")
    metrics_port: int | None = Field(None, ge=0, le=65_535, description="serve Prometheus metrics on this port")
    progress: bool | None = Field(None, description="progress bar (default: on a terminal only)")
    label_header: bool = Field(True, description="send each record's label as the 'label' header (live evaluation "
                                                 "counts; never scored); --no-label-header replays as production "
                                                 "traffic arrives")
    speedup: float = Field(0.0, ge=0, description="Zeek conn.log replays (--schema zeek_conn): keep the capture's "
                           "own pace from each record's ts, this many times faster (1 = as it happened; 0 = ignore "
                           "ts and send at --rate)")
    event_rate: float = Field(0.0, ge=0, le=10_000_000, description="stamp the records with event time at this "
                              "many per second, ending now (record i at now - (limit - i) / rate), however fast "
                              "they are sent: a replay compressed into seconds still spans the minutes the "
                              "traffic took (incident rates, gaps and baselines are in event time); needs "
                              "--limit; 0 = stamp each with its send time")

    @model_validator(mode="after")
    def _event_rate_needs_a_span(self) -> ProducerSettings:
        if self.event_rate and (self.limit is None or self.loop or self.speedup):
            raise ValueError(f"{self.describe('event_rate')} needs {self.describe('limit')} (event time ends now "
                             f"and starts limit / rate seconds earlier) and neither {self.describe('loop')} nor "
                             f"{self.describe('speedup')}")
        return self

    def acls(self) -> list[Grant]:
        """What the replay does on the cluster (``core.acl``): write its topic; create it when missing."""
        return [topic(self.topic, "WRITE", "the records it replays"), *creates([self.topic])]
