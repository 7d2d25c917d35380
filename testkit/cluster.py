"""The cluster a test or a script runs against, and waiting for things to happen on it."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from deploy.kafka import local_kafka

REPO = Path(__file__).resolve().parents[1]  # the repository root: services run from it
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3"}


# ------------------------------------------------------------------------------------------- broker
@contextlib.contextmanager
def broker(bootstrap_servers: str | None = None) -> Iterator[str]:
    """The given cluster, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local broker for the duration."""
    with local_kafka.bootstrap_or_local(bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as b:
        yield b


def create_topics(bootstrap: str, *specs: tuple[str, int] | tuple[str, int, dict[str, str]]) -> None:
    """Create (name, partitions[, config]) topics and wait until they exist."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(s[0], num_partitions=s[1], replication_factor=1, config=s[2] if len(s) > 2 else {})
           for s in specs]
    for fut in admin.create_topics(new, operation_timeout=30).values():
        fut.result(timeout=60)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll a condition (readiness, progress) until true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
