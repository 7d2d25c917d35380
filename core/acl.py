"""What each service may do on a cluster with Kafka's authorizer on: its grants, declared once, as data.

Each service's settings list the grants it needs (``acls()``), named from the very settings it runs with, so
the README's ACL table (``python -m scripts.acl_table``), the least-privilege tests (which grant exactly
these and nothing else) and the service cannot disagree. Only what the service does is listed: DESCRIBE
comes with READ and WRITE in Kafka; an idempotent producer needs no IDEMPOTENT_WRITE once it may WRITE a
topic (KIP-679); CREATE is listed apart, as ``optional``: it is needed only where the service is to create
a topic an operator did not create beforehand.

At start each service asks the broker which of them it holds (:func:`require`: the operations Kafka reports
as authorized for this principal on each topic and group, KIP-430) and exits 3 naming every one it lacks, at
once, instead of failing on the first record that needs it, or never, where a topic is still empty.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from core.kafka import AccessDenied, admin_config

log = logging.getLogger(__name__)

Resource = Literal["topic", "group", "transactional-id"]
Operation = Literal["READ", "WRITE", "CREATE"]

_RESOURCE_TYPES = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                   "transactional-id": ResourceType.TRANSACTIONAL_ID}


@dataclasses.dataclass(frozen=True)
class Grant:
    """One operation on one resource, and why the service needs it (a line of the README's table)."""

    resource: Resource
    name: str
    operation: Operation
    why: str
    prefixed: bool = False  # the name is a prefix (e.g. a group name with a random suffix)
    optional: bool = False  # only for creating a topic that does not exist yet

    def binding(self, principal: str) -> AclBinding:
        """The ACL that allows this grant to ``principal`` (``User:name``) from any host."""
        return AclBinding(_RESOURCE_TYPES[self.resource], self.name,
                          ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
                          principal, "*", getattr(AclOperation, self.operation), AclPermissionType.ALLOW)

    def kafka_acls_flags(self) -> str:
        """The ``kafka-acls.sh`` flags that add it, as an operator types them."""
        pattern = " --resource-pattern-type prefixed" if self.prefixed else ""
        return f"--operation {self.operation} --{self.resource} {self.name}{pattern}"


def topic(name: str, operation: Operation, why: str, *, optional: bool = False) -> Grant:
    return Grant("topic", name, operation, why, optional=optional)


def creates(names: Iterable[str], why: str = "creates it when missing") -> list[Grant]:
    """CREATE on each topic a service creates at start when it is missing (optional: create them beforehand)."""
    return [topic(n, "CREATE", why, optional=True) for n in names]


def required(grants: Iterable[Grant]) -> list[Grant]:
    return [g for g in grants if not g.optional]


def markdown_rows(service: str, grants: Iterable[Grant]) -> list[str]:
    """Table rows for one service: resource, name, operation, why."""
    rows = []
    for g in grants:
        name = f"`{g.name}`" + (" (prefix)" if g.prefixed else "")
        op = f"{g.operation} (optional)" if g.optional else g.operation
        rows.append(f"| {service} | {g.resource} | {name} | {op} | {g.why} |")
    return rows


def missing(client_config: dict[str, Any], grants: Iterable[Grant], timeout_s: float = 30) -> list[Grant]:
    """The required topic and group grants the principal of ``client_config`` does not hold, by the broker's own
    account (describe with authorized operations). A topic that does not exist yet is not judged (its creation
    is, by ``ensure_topic``); transactional ids cannot be described and are judged by ``init_transactions``; a
    broker that cannot say (too old, or an error other than a denial) is trusted, and the first denied request
    names the grant instead."""
    wanted = [g for g in grants if not g.optional and g.resource in ("topic", "group")]
    if not wanted:
        return []
    admin = AdminClient(admin_config(client_config))
    deadline = time.monotonic() + timeout_s
    allowed: dict[tuple[str, str], set[AclOperation] | None] = {}
    for kind in ("topic", "group"):
        names = sorted({g.name for g in wanted if g.resource == kind and not g.prefixed})
        while names and time.monotonic() < deadline:
            if kind == "topic":
                futures = admin.describe_topics(TopicCollection(names), include_authorized_operations=True,
                                                request_timeout=timeout_s)
            else:
                futures = admin.describe_consumer_groups(names, include_authorized_operations=True,
                                                         request_timeout=timeout_s)
            retry = []
            for name, fut in futures.items():
                try:
                    ops = fut.result(timeout=timeout_s).authorized_operations
                    allowed[(kind, name)] = None if ops is None else set(ops)
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED):
                        allowed[(kind, name)] = set()
                    elif err.retriable() or err.code() in _TRANSIENT:
                        retry.append(name)  # e.g. the group coordinator is still loading
                    else:  # UNKNOWN_TOPIC_OR_PART: a topic that does not exist yet; anything else: trusted
                        log.debug("cannot judge the ACLs on %s %s: %s", kind, name, err)
            names = retry
            if names:
                time.sleep(0.2)
    out = []
    for g in wanted:
        ops = allowed.get((g.resource, g.name))
        if ops is not None and getattr(AclOperation, g.operation) not in ops:
            out.append(g)
    return out


_TRANSIENT = frozenset({KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                        KafkaError.NOT_COORDINATOR, KafkaError.LEADER_NOT_AVAILABLE})


def require(client_config: dict[str, Any], grants: Iterable[Grant], service: str) -> None:
    """Raise :class:`AccessDenied` (exit 3) naming every grant ``service`` needs and does not hold."""
    lacking = missing(client_config, grants)
    if lacking:
        user = client_config.get("sasl.username") or "ANONYMOUS"
        lines = "; ".join(f"{g.kafka_acls_flags()} ({g.why})" for g in lacking)
        raise AccessDenied(
            f"Kafka at {client_config.get('bootstrap.servers')} does not allow User:{user} what {service} needs: "
            f"{lines}. Grant each with kafka-acls.sh --bootstrap-server ... --add --allow-principal User:{user} "
            "plus the flags above; the README's ACL table lists what each service needs.")
