"""Detector configuration: typed, validated once at start-up, every field from a flag or the environment."""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
from pathlib import Path

from producer import kafka_options
from producer.kafka_options import KafkaOptions
from training import cli_env


class ConfigError(ValueError):
    """A setting is invalid; the message names the setting and its environment variable."""


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    kafka: KafkaOptions
    input_topic: str
    alert_topic: str
    model: Path
    dlq_topic: str | None = None
    group_id: str = "kdd-detector"
    batch_size: int = 2000
    batch_timeout_ms: int = 20
    metrics_port: int = 9108
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes from outside the pod
    exactly_once: bool = False
    max_message_bytes: int = 16_384
    transactional_id: str | None = None
    group_instance_id: str | None = None
    auto_offset_reset: str = "earliest"
    retry_backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        checks = [
            (bool(self.input_topic.strip()), "--input-topic (DETECTOR_INPUT_TOPIC) is empty"),
            (bool(self.alert_topic.strip()), "--alert-topic (DETECTOR_ALERT_TOPIC) is empty"),
            (self.alert_topic != self.input_topic, "--alert-topic must differ from --input-topic"),
            (self.dead_letter_topic not in (self.input_topic, self.alert_topic),
             "--dlq-topic must differ from the input and alert topics"),
            (1 <= self.batch_size <= 100_000, f"--batch-size (DETECTOR_BATCH_SIZE) must be 1..100000, got "
                                              f"{self.batch_size}"),
            (1 <= self.batch_timeout_ms <= 60_000, "--batch-timeout-ms (DETECTOR_BATCH_TIMEOUT_MS) must be 1..60000, "
                                                   f"got {self.batch_timeout_ms}"),
            (0 <= self.metrics_port <= 65_535, f"--metrics-port (DETECTOR_METRICS_PORT) must be 0..65535, got "
                                               f"{self.metrics_port}"),
            (64 <= self.max_message_bytes <= 10_000_000, "--max-message-bytes must be 64..10000000"),
            (self.auto_offset_reset in ("earliest", "latest"), "--auto-offset-reset must be earliest or latest"),
            (self.model.is_dir(), f"--model (MODEL_DIR) {self.model} is not a directory; train a bundle with "
                                  "`python -m training train --out DIR`"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ConfigError("invalid detector configuration: " + "; ".join(problems))

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.input_topic}.dlq"

    @property
    def effective_transactional_id(self) -> str:
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}-{os.getpid()}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detector",
        description="Score KDD99 records from Kafka with an autoencoder bundle; publish alerts and dead letters.",
        epilog="Exit codes: 0 clean shutdown; 1 fatal runtime error; 2 invalid configuration or model bundle; "
               "3 Kafka unreachable, or it rejected the credentials or TLS settings.",
    )
    kafka_options.add_arguments(p)
    cli_env.add(p, "--input-topic", "DETECTOR_INPUT_TOPIC", default="kdd-connections", help="topic to score")
    cli_env.add(p, "--alert-topic", "DETECTOR_ALERT_TOPIC", default="kdd-alerts", help="topic for alerts")
    cli_env.add(p, "--dlq-topic", "DETECTOR_DLQ_TOPIC", help="dead-letter topic (default: INPUT.dlq)")
    cli_env.add(p, "--model", "MODEL_DIR", default=Path("artifacts/model"), type=Path, help="model bundle directory")
    cli_env.add(p, "--group-id", "DETECTOR_GROUP_ID", default="kdd-detector", help="consumer group")
    cli_env.add(p, "--batch-size", "DETECTOR_BATCH_SIZE", default=2000, type=int, help="max records per batch")
    cli_env.add(p, "--batch-timeout-ms", "DETECTOR_BATCH_TIMEOUT_MS", default=20, type=int,
                help="max wait to fill a batch")
    cli_env.add(p, "--metrics-port", "DETECTOR_METRICS_PORT", default=9108, type=int,
                help="port for /metrics, /healthz, /readyz (0 = any free port)")
    cli_env.add(p, "--metrics-host", "DETECTOR_METRICS_HOST", default="0.0.0.0", help="address to serve metrics on")
    cli_env.add_flag(p, "--exactly-once", "DETECTOR_EXACTLY_ONCE",
                     help="alerts and input offsets in one Kafka transaction (default: at-least-once)")
    cli_env.add(p, "--max-message-bytes", "DETECTOR_MAX_MESSAGE_BYTES", default=16_384, type=int,
                help="larger input records are dead-lettered as oversized")
    cli_env.add(p, "--transactional-id", "DETECTOR_TRANSACTIONAL_ID",
                help="for --exactly-once; a stable per-instance id (e.g. the pod name) lets a restarted instance "
                     "fence its crashed predecessor at once (default: unique per process)")
    cli_env.add(p, "--group-instance-id", "DETECTOR_GROUP_INSTANCE_ID",
                help="static group membership: a restarted instance with the same id takes its partitions back "
                     "without a rebalance or waiting for the session timeout (default: dynamic membership)")
    cli_env.add(p, "--auto-offset-reset", "DETECTOR_AUTO_OFFSET_RESET", default="earliest",
                choices=["earliest", "latest"], help="where a new group starts")
    return p


def from_args(args: argparse.Namespace) -> DetectorConfig:
    try:
        return DetectorConfig(
            kafka=kafka_options.from_args(args), input_topic=args.input_topic, alert_topic=args.alert_topic,
            model=args.model, dlq_topic=args.dlq_topic, group_id=args.group_id, batch_size=args.batch_size,
            batch_timeout_ms=args.batch_timeout_ms, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
            exactly_once=args.exactly_once, max_message_bytes=args.max_message_bytes,
            transactional_id=args.transactional_id, group_instance_id=args.group_instance_id,
            auto_offset_reset=args.auto_offset_reset,
        )
    except ConfigError:
        raise
    except ValueError as exc:  # KafkaOptions validation
        raise ConfigError(str(exc)) from exc
