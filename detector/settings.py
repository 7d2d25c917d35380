"""Settings of ``python -m detector``, each declared once (see ``core.settings``); Kafka's are ``KafkaSettings``."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from core.acl import Grant, creates, topic
from core.kafka import KafkaSettings
from core.settings import MODEL_DIR, Settings
from detector.outputs import DEFAULT_MAX_OUTPUT_BYTES


class DetectorSettings(Settings):
    """Score connection records from Kafka with a model bundle; publish alerts and dead letters."""

    model_config = SettingsConfigDict(env_prefix="DETECTOR_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    input_topic: str = Field("kdd-connections", min_length=1, description="topic to score")
    alert_topic: str = Field("kdd-alerts", min_length=1, description="topic for alerts")
    dlq_topic: str | None = Field(None, description="dead-letter topic (default: INPUT.dlq)")
    model: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR,
                        description="a model bundle, or a model store whose 'current' pointer is followed")
    target_fpr: float | None = Field(None, ge=1e-4, le=0.5, description="place the threshold at this false-positive "
                                     "rate of the bundle's calibration rows instead of its own (no retraining)")
    threshold: float | None = Field(None, gt=0, description="an absolute threshold instead of the bundle's own")
    model_poll_s: float = Field(2.0, ge=0, le=3600, description="how often to check the store's pointer (0 = never)")
    shadow_model: Path | None = Field(None, description="a candidate bundle to score every batch with too "
                                                        "(agreement with the live model in /metrics)")
    shadow_topic: str | None = Field(None, description="also publish the candidate's alerts here (never on the "
                                                       "alert topic)")
    drift_window: int = Field(50_000, ge=1000, le=10_000_000,
                              description="records in the sliding window that drift statistics compare")
    drift_sample_every: int = Field(1, ge=1, le=1000, description="feed every N-th scored record to drift")
    recalibrate: bool = Field(False, description="revise the threshold from the median of recent non-alerting scores "
                              "against the calibration rows' (a shift of the score distribution), within the band: "
                              "keeps the false-positive rate near its target on traffic from another period")
    recalibrate_window: int = Field(50_000, ge=1000, le=10_000_000, description="non-alerting records whose "
                                    "median is tracked; the threshold is revised once per quarter of it, at most "
                                    "5% at a time")
    recalibrate_band: float = Field(2.0, ge=1.0, le=100.0, description="a revised threshold stays within the "
                                    "model's divided or multiplied by this: what no flood can move it beyond")
    group_id: str = Field("kdd-detector", min_length=1, description="consumer group")
    batch_size: int = Field(5000, ge=1, le=100_000, description="max records per batch (larger batches spread each "
                            "batch's fixed costs: 2,000 drained 20-30% slower; the wait below bounds latency)")
    batch_timeout_ms: int = Field(10, ge=1, le=60_000, description="max wait to fill a batch (at low rates every "
                                  "batch waits this long: it is most of produce-to-alert latency)")
    metrics_port: int = Field(9108, ge=0, le=65_535,
                              description="port for /metrics, /healthz, /readyz (0 = any free port)")
    metrics_host: str = Field("0.0.0.0", description="address to serve metrics on")  # noqa: S104 - scraped from outside
    exactly_once: bool = Field(False, description="alerts and input offsets in one Kafka transaction "
                                                  "(default: at-least-once)")
    max_message_bytes: int = Field(16_384, ge=64, le=10_000_000,
                                   description="larger input records are dead-lettered as oversized")
    max_output_bytes: int = Field(DEFAULT_MAX_OUTPUT_BYTES, ge=10_000, le=100_000_000,
                                  description="largest alert or dead letter produced; a larger one becomes an "
                                              "output_too_large dead letter with the source coordinates (keep it "
                                              "below the producer's and the topics' message.max.bytes)")
    transactional_id: str | None = Field(
        None, description="for --exactly-once; a stable per-instance id (e.g. the pod name) lets a restarted "
                          "instance fence its crashed predecessor at once (default: unique per process)")
    group_instance_id: str | None = Field(
        None, description="static group membership: a restarted instance with the same id takes its partitions "
                          "back without a rebalance or waiting for the session timeout (default: dynamic)")
    auto_offset_reset: Literal["earliest", "latest"] = Field("earliest", description="where a new group starts")
    retry_backoff_max_s: float = Field(5.0, gt=0, le=300,
                                       description="longest wait between retries of undeliverable outputs")
    scoring_threads: int = Field(1, ge=0, le=1024,
                                 description="CPU threads the scoring backend may use (0 = its default, all cores); "
                                             "1 leaves the other cores to the Kafka client's threads")
    lateness_s: float = Field(60.0, ge=0, le=86_400, description="Zeek input: how far behind the newest connection a "
                              "record may arrive and still be ordered by its own time (later ones are clamped to "
                              "this bound and counted)")
    max_held: int = Field(200_000, ge=1_000, le=10_000_000, description="Zeek input: connections a partition may "
                          "hold while they wait out the lateness (about 1.5 KB each; lateness x rate are held); past "
                          "it the earliest is released early and counted (pending_capped)")
    state_topic: str | None = Field(None, description="Zeek input: compacted topic of featurizer snapshots "
                                                      "(default: GROUP.featurizer-state)")
    state_every_s: float = Field(30.0, gt=0, le=86_400, description="Zeek input: seconds between featurizer "
                                 "snapshots per partition (a restart replays at most this much input)")
    flush_idle_s: float = Field(30.0, gt=0, le=86_400, description="Zeek input: release the records a partition "
                                "holds once it has been idle this long")
    max_ahead_s: float = Field(300.0, ge=0, le=86_400, description="Zeek input: a connection stamped more than this "
                               "after its Kafka record's timestamp is a dead letter (future_ts): it would drag "
                               "the featurizer's stream time ahead")
    processes: int = Field(1, ge=0, le=256, description="detector processes on this machine, one consumer group "
                           "member each, sharing the input's partitions (0 = one per core it may use); worker i serves "
                           "metrics on PORT+i")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    @model_validator(mode="after")
    def _distinct_topics(self) -> DetectorSettings:
        d = self.describe
        if self.alert_topic == self.input_topic:
            raise ValueError(f"{d('alert_topic')} must differ from {d('input_topic')}")
        if self.dead_letter_topic in (self.input_topic, self.alert_topic):
            raise ValueError(f"{d('dlq_topic')} must differ from the input and alert topics")
        if self.shadow_topic in (self.input_topic, self.alert_topic, self.dead_letter_topic):
            raise ValueError(f"{d('shadow_topic')} must differ from the input, alert and dead-letter topics")
        if self.target_fpr is not None and self.threshold is not None:
            raise ValueError(f"give {d('target_fpr')} or {d('threshold')}, not both")
        if self.shadow_topic and self.shadow_model is None:
            raise ValueError(f"{d('shadow_topic')} needs {d('shadow_model')}")
        if not self.model.is_dir():
            raise ValueError(f"{d('model')} {self.model} is not a directory; train a bundle with "
                             "`python -m training train --out DIR`")
        return self

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"

    @property
    def featurizer_state_topic(self) -> str:
        return self.state_topic or f"{self.group_id}.featurizer-state"

    @property
    def effective_transactional_id(self) -> str:
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"

    def acls(self, conn_state: bool = False) -> list[Grant]:
        """What the detector does on the cluster (``core.acl``): read its input as its group, write alerts and dead
        letters (and shadow alerts), and in exactly-once mode own its transactional id (by default the group id
        then host and pid: a prefix grant)."""
        written = {self.alert_topic: "its alerts", self.dead_letter_topic: "records it cannot read (dead letters)"}
        if self.shadow_topic:
            written[self.shadow_topic] = "the candidate model's alerts (shadow mode)"
        if conn_state:
            written[self.featurizer_state_topic] = "Zeek featurizer snapshots"
        outputs = list(written)
        restores = [topic(self.featurizer_state_topic, "READ", "restores featurizer snapshots")] if conn_state else []
        grants = [topic(self.input_topic, "READ", "the records it scores"), *restores,
                  Grant("group", self.group_id, "READ", "joins its consumer group, commits offsets"),
                  *(topic(t, "WRITE", why) for t, why in written.items())]
        if self.exactly_once:
            grants.append(Grant("transactional-id", self.transactional_id or f"{self.group_id}-", "WRITE",
                                "exactly-once: its transactions", prefixed=self.transactional_id is None))
        return grants + creates(outputs, "creates it when missing (with the input's partition count)")
