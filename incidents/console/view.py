"""The console's picture of the incident topic: the latest record of each incident, followed live.

The incident topic is compacted and keyed by incident id, so reading it from its low watermark and applying
each record (a tombstone removes one) gives every incident's latest state; a background thread keeps following
it. Each record is checked by the service's own reader (``Incident.from_dict``): a record of another shape is
counted and left out, never shown half-parsed and never fatal. Memory is bounded: past ``max_incidents`` the
closed incidents seen longest ago are dropped from the view (the topic still has them).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from core import jsondoc
from core.kafka import MEMORY_BOUNDS, access_denied, is_authorization_error
from core.kafka_io import records
from incidents.book import CLOSED, Incident

log = logging.getLogger("incidents.console")
BAD_RECORD = (ValueError, LookupError, TypeError, AttributeError, RecursionError, OverflowError)


class IncidentView:
    """Incident id -> its latest record, thread-safe; ``version`` moves whenever anything changed."""

    def __init__(self, max_incidents: int) -> None:
        self.max_incidents = max_incidents
        self._incidents: dict[str, Incident] = {}
        self._lock = threading.Lock()
        self.version = 0
        self.unreadable = 0
        self.caught_up = False
        self.error: str | None = None

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the incident topic: a tombstone forgets its key, anything else must be an incident."""
        try:
            if value is None:
                with self._lock:
                    self._incidents.pop((key or b"").decode("utf-8", "replace"), None)
            else:
                inc = Incident.from_dict(jsondoc.loads(value))
                with self._lock:
                    self._incidents[inc.incident_id] = inc
                    if len(self._incidents) > self.max_incidents * 1.1:
                        self._shrink()
        except BAD_RECORD as exc:
            self.unreadable += 1
            log.warning("an incident record of another shape was left out (%s: %s)", type(exc).__name__, exc)
            return
        self.version += 1

    def _shrink(self) -> None:
        """Back to ``max_incidents``: closed incidents seen longest ago go first (in batches, so a flood of new
        incidents costs one sort per tenth of the limit, not one per record)."""
        order = sorted(self._incidents.values(), key=lambda i: (i.status != CLOSED, i.last_seen_ms))
        for inc in order[: len(order) - self.max_incidents]:
            del self._incidents[inc.incident_id]

    def get(self, incident_id: str) -> Incident | None:
        with self._lock:
            return self._incidents.get(incident_id)

    def ranked(self, include_closed: bool) -> list[Incident]:
        """Incidents best priority first (ties: the most recent first); open ones only unless asked."""
        with self._lock:
            found = [i for i in self._incidents.values() if include_closed or i.status != CLOSED]
        return sorted(found, key=lambda i: (-i.priority, -i.last_seen_ms, i.incident_id))

    def __len__(self) -> int:
        return len(self._incidents)


def follow(conf: dict[str, Any], topic: str, view: IncidentView, stop: threading.Event) -> None:
    """Read ``topic`` from its start into ``view``, then keep following it until ``stop`` is set.

    No consumer group (the console commits nothing and needs no group ACL): every partition is assigned from its
    low watermark. ``view.caught_up`` turns true once the end seen at start was reached (readiness). A topic
    that is missing raises RuntimeError, a denied one ``AccessDenied`` (exit 3): waiting would not help."""
    consumer = Consumer({**MEMORY_BOUNDS, **conf, "group.id": f"console-{topic}", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": False})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        if md.error is not None and is_authorization_error(md.error):
            raise access_denied(conf, md.error, "consumer", topic)
        if md.error is not None:
            raise RuntimeError(f"the incident topic {topic!r} cannot be read ({md.error.str()}): start the "
                               "incident service first (it creates the topic) or name the right topic")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in md.partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.partitions])
        while not stop.is_set():
            for msg in records(consumer.consume(1000, 0.5), conf, uses_group=False):
                view.apply(msg.key(), msg.value())
            if not view.caught_up:
                positions = consumer.position([TopicPartition(topic, p) for p in ends])
                view.caught_up = all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions)
    except (RuntimeError, KafkaException) as exc:
        view.error = str(exc)
        raise
    finally:
        consumer.close()
