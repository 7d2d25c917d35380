"""A single broker restarted (SIGKILL, then started again) while the replay producer and the detector run.

Both must ride it out in the same process, with no restart and nothing lost. Faults that need more than
one broker (a node lost, the alert topic's only broker down) are in ``test_kafka_cluster.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from core.records import read_records
from deploy.kafka import local_kafka
from testkit import (
    DetectorProcess,
    assert_alerted,
    committed_all,
    offline_alert_ids,
    start_replay,
    wait_until,
)
from tests.conftest import create_topic, own_cluster

OUTAGE_S = 8.0  # how long the broker stays down: the fault itself, not a readiness wait


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    yield from own_cluster(tmp_path_factory, "kafka-restart")  # the test restarts it


def test_broker_restart_during_replay(own_broker: local_kafka.LocalKafka, small_bundle: Path, kdd_path: Path,
                                      tmp_path: Path) -> None:
    rows = 40_000
    bootstrap = own_broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic, alerts = create_topic(admin, "restart", 3, 1), create_topic(admin, "restart-alerts", 3, 1)
    group = f"g-{topic}"
    expected, _ = offline_alert_ids(small_bundle, read_records(kdd_path, limit=rows, keep_raw=True))

    det = DetectorProcess(bootstrap, topic, alerts, small_bundle, group=group, log_path=tmp_path / "d.log")
    with det:
        pid = det.pid
        replay = start_replay(bootstrap, topic, kdd_path, rows, 4000, log_path=tmp_path / "p.log")
        wait_until(lambda: det.total("detector_records_scored_total") >= 8000, 120, "scoring before the fault")
        own_broker.stop_node(0, kill=True)  # SIGKILL: no controlled shutdown
        down_at = det.total("detector_records_scored_total")
        time.sleep(OUTAGE_S)
        assert det.alive() and det.get("/healthz")[0] == 200  # alive, waiting, not crashed
        own_broker.start_node(0)
        own_broker.wait_ready()
        assert replay.wait(timeout=240) == 0, (tmp_path / "p.log").read_text()[-3000:]  # producer rode it out too
        wait_until(lambda: committed_all(bootstrap, group, topic), 240, "detector caught up", 1.0)
        assert det.alive() and det.pid == pid  # the same process: reconnected, not restarted
        assert det.total("detector_records_scored_total") >= rows > down_at
        assert det.total("detector_dead_letters_total") == 0
        assert det.stop() == 0

    duplicates = assert_alerted(bootstrap, alerts, expected)  # nothing lost
    print(f"broker restart: {len(expected)} alerts, {duplicates} duplicates (at-least-once)")
