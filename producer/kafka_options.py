"""Kafka client settings shared by the producer and the detector: one place for security and pass-through.

Operators configure a real cluster with a handful of named options (security protocol, SASL, TLS CA)
and anything else librdkafka accepts through ``-X key=value``. Secrets never reach a log line: the
effective configuration is printed through :func:`redacted`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

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
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.connect_timeout_s <= 3600:
            raise ValueError(f"--connect-timeout-s (KAFKA_CONNECT_TIMEOUT_S) must be 1..3600, got "
                             f"{self.connect_timeout_s}")
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
    cli_env.add(parser, "--connect-timeout-s", "KAFKA_CONNECT_TIMEOUT_S", default=30.0, type=float,
                help="give up (exit 3) when no broker answers within this time; rejected credentials fail at once")
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
        connect_timeout_s=args.connect_timeout_s,
    )


class KafkaConnectError(RuntimeError):
    """The cluster cannot be used: unreachable, or it rejected our credentials or TLS settings."""


def is_auth_error(err: KafkaError) -> bool:
    """Errors that retrying with the same settings cannot fix (librdkafka reports them as non-fatal)."""
    return err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED,
                          KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                          KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)


def explain_auth_error(client_config: dict[str, Any], err: KafkaError) -> str:
    """An operator-facing message for a rejected connection; it names the user, never the password."""
    where = client_config.get("bootstrap.servers")
    if err.code() == KafkaError._SSL:
        return (f"TLS handshake with Kafka at {where} failed: {err.str()}. Check --ssl-ca-location "
                "(KAFKA_SSL_CA_LOCATION) and that the broker certificate names the host you connect to.")
    if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        user = client_config.get("sasl.username")
        return (f"Kafka at {where} rejected the credentials of SASL user {user!r} "
                f"({client_config.get('sasl.mechanism')}): {err.str()}. Check --sasl-username/--sasl-password "
                "(KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD) and --sasl-mechanism.")
    return (f"Kafka at {where} refused access ({err.name()}): {err.str()}. Grant the principal "
            f"{client_config.get('sasl.username')!r} the ACLs listed in the README.")


def admin_config(client_config: dict[str, Any]) -> dict[str, Any]:
    """The subset of client settings an AdminClient accepts (no producer/consumer-only keys)."""
    return {k: v for k, v in client_config.items() if not k.startswith(("enable.", "acks"))}


def check_connection(client_config: dict[str, Any], timeout_s: float) -> ClusterMetadata:
    """Return cluster metadata once a broker answers; raise :class:`KafkaConnectError` otherwise.

    librdkafka retries rejected credentials forever, so without this a misconfigured service would sit
    "running" and do nothing. Authentication and TLS errors fail at once; an unreachable cluster is
    retried until ``timeout_s`` (brokers may still be starting).
    """
    errors: list[KafkaError] = []
    admin = AdminClient({**admin_config(client_config), "error_cb": errors.append})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            return admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            last = exc
        admin.poll(0)  # delivers error_cb
        for err in errors:
            if is_auth_error(err):
                raise KafkaConnectError(explain_auth_error(client_config, err))
        if time.monotonic() >= deadline:
            seen = "; ".join(sorted({e.str() for e in errors})[:3]) or str(last)
            raise KafkaConnectError(
                f"no Kafka broker answered at {client_config.get('bootstrap.servers')} within {timeout_s:.0f}s "
                f"({seen}). Check --bootstrap-servers (KAFKA_BOOTSTRAP_SERVERS), --security-protocol and that "
                "the cluster is up; --connect-timeout-s waits longer."
            )


def ensure_topic(client_config: dict[str, Any], topic: str, partitions: int, replication: int,
                 metadata: ClusterMetadata | None = None) -> None:
    """Create ``topic`` when missing; an existing topic is used as it is.

    ``metadata`` (e.g. what :func:`check_connection` returned) saves listing the cluster again at start-up.
    """
    admin = AdminClient(admin_config(client_config))
    md = metadata if metadata is not None else admin.list_topics(timeout=30)
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
