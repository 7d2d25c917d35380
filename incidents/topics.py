"""The incident service's topics: created with the alert topic's partition count, and refused when they differ.

The incident, state and feedback topics are co-partitioned with the alert topic (``incidents.partitions``): the
records of alert partition p's book live on their partition p, and a verdict on one of its incidents is routed
there (``core.routing``). The suppressed, dead-letter and OCSF topics take the same count so that their writes
spread like the work. The service waits, not ready and saying why, until the alert topic exists (the detector
creates it with its input's count): a guessed count would fix the group's width before the detector chose it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka.admin import AdminClient

from core.kafka import access_denied, admin_config, ensure_topic, is_authorization_error
from core.kafka_io import FatalError
from incidents.settings import IncidentSettings

POLL_S = 2.0


def alert_partitions(conf: dict[str, Any], alert_topic: str, stop: threading.Event, say: Callable[[str], None]
                     ) -> int:
    """The alert topic's partition count, once it exists; ``say`` tells /readyz what is awaited meanwhile."""
    admin = AdminClient(admin_config(conf))
    while True:
        topic = admin.list_topics(alert_topic, timeout=30).topics.get(alert_topic)
        if topic is not None and topic.error is None and topic.partitions:
            return len(topic.partitions)
        if topic is not None and topic.error is not None and is_authorization_error(topic.error):
            raise access_denied(conf, topic.error, "consumer", alert_topic)  # exit 3 naming the grant
        why = f"waiting for the alert topic {alert_topic} (the detector creates it)"
        say(why)
        if stop.wait(POLL_S):
            raise FatalError(f"stopped while {why}")


def ensure_topics(s: IncidentSettings, conf: dict[str, Any], brokers: int, partitions: int) -> None:
    """Create what is missing with ``partitions`` partitions; refuse co-partitioned topics of another count."""
    replication = min(3, max(1, brokers))
    for topic in (s.incident_topic, s.state):
        ensure_topic(conf, topic, partitions, replication, None, {"cleanup.policy": "compact"}, needs="READ WRITE")
    ensure_topic(conf, s.feedback_topic, partitions, replication, None, needs="READ")
    for topic in (s.suppressed_topic, s.dead_letter_topic, *([s.ocsf_topic] if s.ocsf_topic else [])):
        ensure_topic(conf, topic, partitions, replication, None)
    copartitioned(conf, [s.incident_topic, s.state, s.feedback_topic], partitions)


def copartitioned(conf: dict[str, Any], topics: list[str], partitions: int) -> None:
    """Refuse an incident, state or feedback topic whose partition count is not the alert topic's: a book's
    records would land where no restore looks for them, and verdicts where no book owns their kind."""
    md = AdminClient(admin_config(conf)).list_topics(timeout=30)
    wrong = {t: len(md.topics[t].partitions) for t in topics if t in md.topics
             and len(md.topics[t].partitions) != partitions}
    if wrong:
        raise FatalError(f"the alert topic has {partitions} partition(s), but {wrong} do not: the incident, state "
                         "and feedback topics hold each alert partition's incidents, state and verdicts on the "
                         "partition of the same number, so they need as many. Create them with that count (an "
                         "empty deployment), or move the service to new topic names (--incident-topic, "
                         "--state-topic, --feedback-topic) with as many partitions")
