"""The test kit: the services run as operators run them, for the tests, the benchmarks, the soaks and the demo.

``cluster`` (a broker: ``KAFKA_BOOTSTRAP_SERVERS`` or one started by ``deploy/kafka/local_kafka.py``; topics;
waiting), ``services`` (the detector, producer and incident service as processes of their own CLIs, ready
when ``/readyz`` says so), ``metrics`` (``/metrics`` read as numbers, RSS), ``topics`` (rows produced as the
producer sends them; alerts, incidents and committed offsets read back) and ``expected`` (the alerts a bundle
should raise, computed offline for the same rows). Nothing shipped imports it (``tests/unit/test_layout.py``), and
no image carries it.
"""

from testkit.cluster import QUIET_TF, REPO, broker, create_topics, unique, wait_until
from testkit.expected import ensure_bundle, expected_replay_alerts, offline_alert_ids
from testkit.metrics import rss_bytes, scrape, total
from testkit.services import (
    ConsoleProcess,
    DetectorProcess,
    IncidentProcess,
    ServiceProcess,
    producer_args,
    replay_summary,
    start_replay,
)
from testkit.topics import (
    alert_docs,
    alert_latencies,
    alert_timing,
    assert_alerted,
    committed_all,
    committed_count,
    committed_records,
    drain,
    latest_incidents,
    produce_rows,
    record_ends,
)
from testkit.zeek_expected import offline_zeek_scores

__all__ = [
    "QUIET_TF", "REPO", "ConsoleProcess", "DetectorProcess", "IncidentProcess", "ServiceProcess", "alert_docs",
    "alert_latencies",
    "alert_timing", "assert_alerted", "broker", "committed_all", "committed_count", "committed_records",
    "create_topics", "drain", "record_ends",
    "ensure_bundle", "expected_replay_alerts", "latest_incidents", "offline_alert_ids", "offline_zeek_scores",
    "produce_rows",
    "producer_args", "replay_summary", "rss_bytes", "scrape", "start_replay", "total", "unique", "wait_until",
]
