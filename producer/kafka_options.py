"""Kafka client settings shared by the producer and the detector: one place for security and pass-through.

Operators configure a real cluster with a handful of named options (security protocol, SASL, TLS CA)
and anything else librdkafka accepts through ``-X key=value``. Secrets never reach a log line: the
effective configuration is printed through :func:`redacted`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from training import cli_env

log = logging.getLogger(__name__)

SECRET_KEYS = ("sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")


@dataclasses.dataclass(frozen=True)
class KafkaOptions:
    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = dataclasses.field(default=None, repr=False)
    ssl_ca_location: str | None = None
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap servers are empty; pass --bootstrap-servers or set KAFKA_BOOTSTRAP_SERVERS")
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security protocol {self.security_protocol!r} is not one of {SECURITY_PROTOCOLS}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(f"--sasl-mechanism must be one of {SASL_MECHANISMS} with {self.security_protocol}")
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.sasl_username and self.sasl_password
            ):
                raise ValueError(
                    f"{self.sasl_mechanism} needs --sasl-username and --sasl-password (or KAFKA_SASL_USERNAME "
                    "and KAFKA_SASL_PASSWORD)"
                )

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings: named options first, then ``-X`` pass-through, which wins."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.extra)
        return conf


def redacted(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if k in SECRET_KEYS or "password" in k or "secret" in k else v) for k, v in conf.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_env.add(parser, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092",
                help="Kafka bootstrap servers, host:port[,host:port]")
    cli_env.add(parser, "--security-protocol", "KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT",
                choices=list(SECURITY_PROTOCOLS), help="listener security protocol")
    cli_env.add(parser, "--sasl-mechanism", "KAFKA_SASL_MECHANISM", help="SASL mechanism, e.g. SCRAM-SHA-512")
    cli_env.add(parser, "--sasl-username", "KAFKA_SASL_USERNAME", help="SASL user name")
    cli_env.add(parser, "--sasl-password", "KAFKA_SASL_PASSWORD", secret=True,
                help="SASL password (prefer the environment variable: flags show up in ps)")
    cli_env.add(parser, "--ssl-ca-location", "KAFKA_SSL_CA_LOCATION", help="CA certificate file for TLS")
    parser.add_argument("-X", dest="kafka_extra", action="append", metavar="KEY=VALUE", default=[],
                        help="any librdkafka setting, repeatable [env KAFKA_EXTRA_CONFIG as k=v,k=v]")


def from_args(args: argparse.Namespace) -> KafkaOptions:
    return KafkaOptions(
        bootstrap_servers=args.bootstrap_servers,
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        sasl_password=args.sasl_password,
        ssl_ca_location=args.ssl_ca_location,
        extra=cli_env.parse_kv(args.kafka_extra, "KAFKA_EXTRA_CONFIG"),
    )


def ensure_topic(client_config: dict[str, Any], topic: str, partitions: int, replication: int) -> None:
    """Create ``topic`` when missing; an existing topic is used as it is."""
    admin = AdminClient({k: v for k, v in client_config.items() if not k.startswith(("enable.", "acks"))})
    md = admin.list_topics(timeout=30)
    if topic in md.topics and md.topics[topic].error is None:
        return
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication)],
                              operation_timeout=30)[topic]
    try:
        fut.result(timeout=60)
        log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
