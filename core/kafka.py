"""Kafka client settings shared by the producer and the detector, and the connection checks both run.

Operators configure a real cluster with a handful of named settings (security protocol, SASL, TLS CA)
and anything else librdkafka accepts through ``-X key=value``. Secrets never reach a log line: the
password is a ``SecretStr`` and the effective configuration is printed through :func:`redacted`.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Annotated, Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from core.settings import Settings, parse_pairs

log = logging.getLogger(__name__)

# librdkafka's own list: every property src/rdkafka_conf.c flags _RK_SENSITIVE (read at librdkafka 4c3b017, its
# redacting dump hides exactly these). A user name is on it; an auth error still names the user on purpose.
SECRET_KEYS = frozenset({
    "sasl.username", "sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.file", "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem", "ssl.key.location", "ssl.key.password", "ssl.key.pem", "ssl_key",
    "ssl.keystore.password", "ssl.ca.pem",
})
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"]

# The detector's consumer (the incident service and retraining keep librdkafka's default: see issue 15's
# note). Once a partition's local queue reaches its thresholds, librdkafka (>= 2.2)
# stops fetching it for fetch.queue.backoff.ms; the default, 1,000 ms, let a consumer under backlog empty its
# queue and then wait: the detector polled nothing for 20 ms at a time (70 times in a 4 s drain, the machine
# 55% idle) and drained 139k records/s; with 10 ms, no empty poll and 199k/s, and a bare consumer went from
# ~190k to ~1.4M records/s (issue 15). Memory stays bounded by the queue thresholds. ``-X`` overrides it.
CONSUMER_DEFAULTS: dict[str, Any] = {"fetch.queue.backoff.ms": 10}

# Every consumer's memory, bounded by settings (issue 31 item 5: 0.48 MB of gzip raised the detector's RSS by
# 438 MB). librdkafka decompresses a whole fetch before its queue limit can stop the next one, so what a single
# fetch may carry (compressed) is what bounds the burst: 1 MiB per fetch, 256 KiB per partition (a single
# larger batch still comes whole: the topic's max.message.bytes bounds it), at most 32 MiB of decoded records
# queued, and a zstd or lz4 batch that decodes past 64 MiB is refused (an undecodable batch: ``core.poison``
# skips it with a dead letter). gzip has no decode limit in librdkafka: its bound is the fetch and batch sizes
# times deflate's ratio (at most ~1,030). ``-X`` overrides any of them.
MEMORY_BOUNDS: dict[str, Any] = {"fetch.max.bytes": 1_048_576, "max.partition.fetch.bytes": 262_144,
                                 "queued.max.messages.kbytes": 32_768, "receive.message.max.bytes": 67_108_864}


class KafkaSettings(Settings):
    """How to reach the cluster; every field is ``KAFKA_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_")

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1,
                                   description="Kafka bootstrap servers, host:port[,host:port]")
    security_protocol: SecurityProtocol = Field("PLAINTEXT", description="listener security protocol")
    sasl_mechanism: SaslMechanism | None = Field(None, description="SASL mechanism, e.g. SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(
        None, description="SASL password (prefer the environment variable: flags show up in ps)")
    ssl_ca_location: str | None = Field(None, description="CA certificate file for TLS")
    connect_timeout_s: float = Field(30.0, ge=1, le=3600, description="give up (exit 3) when no broker answers "
                                     "within this time; rejected credentials fail at once")
    extra: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="KAFKA_EXTRA_CONFIG",
        description="any librdkafka setting, repeatable (environment: k=v,k=v)",
        json_schema_extra={"flag": "-X", "metavar": "KEY=VALUE"})

    @field_validator("extra", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> dict[str, str]:
        """``-X`` flags (a list) add to the environment's pairs rather than replace them."""
        if isinstance(value, list):
            return {**parse_pairs(os.environ.get(cls.env_name("extra")), "-X"), **parse_pairs(value, "-X")}
        return parse_pairs(value, "-X")

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if not self.bootstrap_servers.strip():
            raise ValueError(f"bootstrap servers are empty; pass {self.describe('bootstrap_servers')}")
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"{self.describe('sasl_mechanism')} is required with {self.security_protocol}")
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.sasl_username and self.sasl_password
            ):
                raise ValueError(f"{self.sasl_mechanism} needs {self.describe('sasl_username')} and "
                                 f"{self.describe('sasl_password')}")
        return self

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings: named settings first, then ``-X`` pass-through, which wins."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers,
                                "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.extra)
        return conf


def redacted(conf: dict[str, Any]) -> dict[str, Any]:
    """A client configuration fit for a log line: librdkafka's sensitive settings, and anything else whose name
    says password, secret, key or token, shown as ``***``."""
    return {k: ("***" if k in SECRET_KEYS or any(w in k for w in ("password", "secret", "key", "token")) else v)
            for k, v in conf.items()}


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
        return (f"TLS handshake with Kafka at {where} failed: {err.str()}. Check "
                f"{KafkaSettings.describe('ssl_ca_location')} and that the broker certificate names the host you "
                "connect to.")
    if err.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        user = client_config.get("sasl.username")
        return (f"Kafka at {where} rejected the credentials of SASL user {user!r} "
                f"({client_config.get('sasl.mechanism')}): {err.str()}. Check "
                f"{KafkaSettings.describe('sasl_username')}, "
                f"{KafkaSettings.describe('sasl_password')} and {KafkaSettings.describe('sasl_mechanism')}.")
    return (f"Kafka at {where} refused access ({err.name()}): {err.str()}. Grant the principal "
            f"{client_config.get('sasl.username')!r} the ACLs listed in the README.")


AUTHORIZATION_ERRORS = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                                  KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                                  KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED})
Role = Literal["consumer", "producer", "admin"]


class AccessDenied(KafkaConnectError):
    """The cluster knows who we are, and an ACL forbids what we need. Waiting cannot help (an operator must
    grant it), so services exit 3 at once with the operation and resource to grant, not after a timeout."""


def is_authorization_error(err: KafkaError) -> bool:
    return err.code() in AUTHORIZATION_ERRORS


def access_denied(client_config: dict[str, Any], err: KafkaError, role: Role, topic: str | None = None
                  ) -> AccessDenied:
    """The denial as an operator reads it: which operation on which resource, for which principal, and the
    ``kafka-acls.sh`` line that grants it. The role says what the request was (a consumer reads a topic, a
    producer writes it, an admin creates it); the client's own settings name the group and transactional id."""
    code = err.code()
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        group = client_config.get("group.id", "?")
        operation, resource, flag = "READ", f"group {group!r}", f"--group {group}"
    elif code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
        tid = client_config.get("transactional.id", "?")
        operation, resource, flag = "WRITE", f"transactional-id {tid!r}", f"--transactional-id {tid}"
    elif code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        operation = "CREATE" if role == "admin" else "IDEMPOTENT_WRITE"
        resource, flag = "the cluster", "--cluster"
    else:
        operation = {"consumer": "READ", "producer": "WRITE", "admin": "CREATE"}[role]
        resource, flag = f"topic {topic!r}", f"--topic {topic}"
    user = client_config.get("sasl.username") or "ANONYMOUS"
    return AccessDenied(
        f"Kafka at {client_config.get('bootstrap.servers')} denied {operation} on {resource} to principal "
        f"User:{user} ({err.name()}). Grant it (kafka-acls.sh --bootstrap-server ... --add --allow-principal "
        f"User:{user} --operation {operation} {flag}); the README's ACL table lists what each service needs.")


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
                f"({seen}). Check {KafkaSettings.describe('bootstrap_servers')}, "
                f"{KafkaSettings.describe('security_protocol')} and that the cluster is up; "
                f"{KafkaSettings.describe('connect_timeout_s')} waits longer."
            )


def ensure_topic(client_config: dict[str, Any], topic: str, partitions: int, replication: int,
                 metadata: ClusterMetadata | None = None, config: dict[str, str] | None = None,
                 needs: str = "WRITE") -> None:
    """Create ``topic`` when missing; an existing topic is used as it is.

    ``metadata`` (e.g. what :func:`check_connection` returned) saves listing the cluster again at start-up.
    ``needs`` is what the service does with the topic ("READ", "WRITE"): on a cluster with ACLs a topic the
    principal may not use is invisible to it, so a denied creation names that grant as well as CREATE.
    """
    admin = AdminClient(admin_config(client_config))
    md = metadata if metadata is not None else admin.list_topics(timeout=30)
    if topic in md.topics and md.topics[topic].error is None:
        return
    new = NewTopic(topic, num_partitions=partitions, replication_factor=replication, config=config or {})
    fut = admin.create_topics([new], operation_timeout=30)[topic]
    try:
        fut.result(timeout=60)
        log.info("created topic %s (%d partitions, replication %d)", topic, partitions, replication)
    except KafkaException as exc:
        err = exc.args[0]
        if is_authorization_error(err):  # not visible to us (no ACL on it) and we may not create it
            user = client_config.get("sasl.username") or "ANONYMOUS"
            ops = " and ".join(f"--operation {op}" for op in needs.split())
            raise AccessDenied(
                f"Kafka at {client_config.get('bootstrap.servers')}: topic {topic!r} is not visible to User:{user} "
                f"and creating it was denied ({err.name()}). If it exists, grant {needs} on it (kafka-acls.sh "
                f"--bootstrap-server ... --add --allow-principal User:{user} {ops} --topic {topic}); if not, create "
                f"it, or grant --operation CREATE --topic {topic}. The README's ACL table lists what each service "
                "needs.") from None
        if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
