"""Where an alert, its incident, its kind's state and a verdict on it live: one partition, chosen by the kind.

The incident service runs as a consumer group (issue 32): each instance owns some partitions of the alert topic
and keeps, for each, the incidents, verdicts, learned baselines and page-budget share of that partition alone.
That is only exact if everything one incident needs arrives on one partition. An incident is one signature (or
one source host and kind), a verdict covers one kind, a baseline is one kind's rate: all three are within a
kind (the categories and the worst feature). So:

- the detector keys each alert by its kind's *route* (:func:`alert_route`), a short digest, and every writer
  of routed keys uses :data:`ROUTED_PRODUCER` (murmur2, the Java client's partitioner: the same key lands on
  the same partition whichever Kafka client wrote it);
- the incident service writes each incident and state record to the partition its alert came from and names
  the partition in the incident id (``inc-p<partition>-<signature digest>-<first event ms>``);
- a verdict on an incident goes to that partition of the feedback topic (:func:`incident_partition`), so it
  reaches the book that holds the incident, whichever instance owns it now.

A verdict follows the incident, not the kind: an alert whose key was forged (or written by a client keying
otherwise) is filed where it arrived, into an incident of that partition, and a verdict on that incident
reaches it there; ids never collide across partitions. The cost of keying by kind: one kind's alerts are one
partition's, so a flood of a single kind is served by one instance; more partitions spread different kinds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from core.jsondoc import clean_text

ROUTED_PRODUCER = {"partitioner": "murmur2_random"}  # what every writer of a routed key uses
ROUTE_HEX = 16
KIND_PART_CHARS = 64  # characters of a category or feature name the incident service keeps (its MAX_NAME)
_PARTITIONED_ID = re.compile(r"inc-p(\d{1,6})-")


def kind_route(kind: Iterable[str]) -> str:
    """The route of a kind: a digest, so that hostile category strings keep a short key. Each part is taken as
    the incident service reads it from the alert (lone surrogates replaced, ``core.jsondoc``; at most
    ``KIND_PART_CHARS`` characters), so a value the detector passed through as it came routes the same."""
    parts = (clean_text(part)[:KIND_PART_CHARS] for part in kind)
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=ROUTE_HEX // 2).hexdigest()


def alert_route(categories: Iterable[str], worst_feature: str | None) -> str:
    """The key of an alert: the route of its kind as the incident service reads it (the category values in
    the alert's order, then the worst feature's name when it has one)."""
    return kind_route((*categories, *(() if worst_feature is None else (worst_feature,))))


def incident_id_prefix(partition: int) -> str:
    return f"inc-p{partition}-"


def incident_partition(incident_id: str) -> int | None:
    """The partition whose book holds ``incident_id`` (the feedback partition a verdict on it goes to); None for
    an id from before partitioned books (one partition: the producer's partitioner decides)."""
    match = _PARTITIONED_ID.match(incident_id)
    return int(match.group(1)) if match else None
