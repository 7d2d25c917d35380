"""Three real brokers (RF 3, min.insync.replicas 2, acks=all) and the faults only a cluster can have: a node
lost mid-stream, nodes lost and coming back while the detector runs, and the alert topic's broker down."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core.records import read_records
from deploy.kafka import local_kafka
from testkit import (
    DetectorProcess,
    assert_alerted,
    committed_all,
    drain,
    offline_alert_ids,
    produce_rows,
    start_replay,
    wait_until,
)
from tests.conftest import create_topic, own_cluster

N = 20_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    yield from own_cluster(tmp_path_factory, "kafka3", nodes=3)  # the tests stop nodes


def test_node_loss_mid_stream_loses_nothing(cluster: local_kafka.LocalKafka) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    topic = create_topic(admin, "rf3", partitions=6, replication=3, config={"min.insync.replicas": "2"})
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "message.timeout.ms": 120_000,
    })
    delivered: list[int] = []
    failed: list[str] = []
    lock = threading.Lock()

    def on_delivery(err: object, msg: object) -> None:
        with lock:
            if err is not None:
                failed.append(str(err))
            else:
                delivered.append(int(msg.key()))  # type: ignore[attr-defined]

    victim = 1  # node 2: not necessarily the leader of everything, but a replica of every partition
    for i in range(N):
        if i == N // 2:
            assert producer.flush(60) == 0
            cluster.stop_node(victim, kill=True)
            assert not cluster.node_alive(victim)
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert failed == []
    assert sorted(delivered) == list(range(N))

    md = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.isrs) == 2 for p in md.partitions.values()), "ISR should have shrunk to the 2 live nodes"

    messages = drain(cluster.bootstrap_servers, topic, N)
    keys = [int(m.key()) for m in messages]
    assert len(keys) == N and sorted(keys) == list(range(N))

    cluster.start_node(victim)  # and it rejoins: all three brokers serve metadata again
    cluster.wait_ready()


@pytest.fixture(autouse=True)
def healthy(cluster: local_kafka.LocalKafka) -> None:
    """Every test starts from a whole cluster: all brokers unfenced, every ISR full (not after a fixed time)."""
    cluster.wait_healthy()


def all_nodes_up(cluster: local_kafka.LocalKafka) -> None:
    """Leave the shared cluster whole for the next test, whatever this one did to it."""
    for i in range(len(cluster.nodes)):
        if not cluster.node_alive(i):
            cluster.start_node(i)
    cluster.wait_healthy()


def test_nodes_lost_and_back_during_replay(cluster: local_kafka.LocalKafka, small_bundle: Path, kdd_path: Path,
                                           tmp_path: Path) -> None:
    rows = 90_000
    bootstrap = cluster.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = create_topic(admin, "roll", 6, 3, {"min.insync.replicas": "2"})
    alerts = create_topic(admin, "roll-alerts", 6, 3, {"min.insync.replicas": "2"})
    group = f"g-{topic}"
    expected, _ = offline_alert_ids(small_bundle, read_records(kdd_path, limit=rows, keep_raw=True))
    # Node 1 goes down and comes back, then node 3: every partition loses a replica and, for some, its
    # leader and the group coordinator; the quorum keeps 2 of 3 controllers throughout.
    plan = [(10_000, "kill", 0), (25_000, "start", 0), (45_000, "kill", 2), (60_000, "start", 2)]
    det = DetectorProcess(bootstrap, topic, alerts, small_bundle, group=group, log_path=tmp_path / "d.log")
    try:
        with det:
            pid = det.pid
            replay = start_replay(bootstrap, topic, kdd_path, rows, 3000, log_path=tmp_path / "p.log")
            for at, action, node in plan:
                wait_until(lambda at=at: det.total("detector_records_scored_total") >= at, 180,
                           f"{at} records scored before node {node + 1} {action}")
                if action == "kill":
                    cluster.stop_node(node, kill=True)
                else:
                    cluster.start_node(node)
                    cluster.wait_healthy()
            assert replay.wait(timeout=240) == 0, (tmp_path / "p.log").read_text()[-3000:]
            wait_until(lambda: committed_all(bootstrap, group, topic), 240, "detector caught up", 1.0)
            assert det.alive() and det.pid == pid  # rode out every fault in one process
            assert det.total("detector_dead_letters_total") == 0
            assert det.stop() == 0
    finally:
        all_nodes_up(cluster)
    duplicates = assert_alerted(bootstrap, alerts, expected)
    print(f"nodes lost and back: {len(expected)} alerts, {duplicates} duplicates")


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_alert_topic_unavailable_pauses_input(cluster: local_kafka.LocalKafka, small_bundle: Path,
                                              kdd_path: Path, tmp_path: Path, mode: str) -> None:
    """The alert topic lives only on node 3; stopping node 3 leaves input, offsets and transactions (RF 3)
    working while no alert can be written: the detector must stop reading, hold its memory, and resume. At least
    once, the outage outlasts max.poll.interval.ms (7 s here): the consumer keeps polling, paused, and stays in
    its group (an evicted member would log its partitions revoked); /readyz says why it is not ready."""
    rows = 50_000
    bootstrap = cluster.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    data = read_records(kdd_path, limit=rows, keep_raw=True)
    expected, _ = offline_alert_ids(small_bundle, data)
    topic = create_topic(admin, "outage", 3, 3, {"min.insync.replicas": "2"})
    alerts = f"outage-alerts-{uuid.uuid4().hex[:12]}"
    only_on_node_3 = NewTopic(alerts, num_partitions=3, replica_assignment=[[3], [3], [3]])
    admin.create_topics([only_on_node_3])[alerts].result(timeout=60)
    group = f"g-{topic}"
    extra = ["-X", "message.timeout.ms=3000",  # refused writes surface in 3 s, so the detector's retry path runs
             "-X", "queued.max.messages.kbytes=4096"]  # a small prefetch: reading on would show in RSS
    if mode == "exactly-once":
        # a transactional call blocks up to its timeout (60 s) while the coordinator cannot finish an abort: the
        # default max.poll.interval.ms (300 s) covers it, a 7 s one would not
        extra += ["--exactly-once", "--transactional-id", f"tx-{topic}"]
    else:
        extra += ["-X", "session.timeout.ms=6000", "-X", "max.poll.interval.ms=7000"]  # evicted after 7 s unpolled
    det = DetectorProcess(bootstrap, topic, alerts, small_bundle, *extra, group=group, log_path=tmp_path / "d.log")
    try:
        with det:
            cluster.stop_node(2, kill=True)
            produce_rows(bootstrap, topic, data)
            wait_until(lambda: det.total("detector_consumption_paused") == 1, 120, "input paused")
            wait_until(lambda: det.total("detector_output_retries_total") >= 2, 60, "outputs retried")
            rss_paused, retries = det.rss_bytes(), det.total("detector_output_retries_total")
            # A first batch without alerts may have completed before the outage bit; after that, nothing more.
            scored_paused = det.total("detector_records_scored_total")
            wait_until(lambda: det.total("detector_output_retries_total") >= retries + 3, 120, "a lasting outage")
            growth = det.rss_bytes() - rss_paused
            assert not committed_all(bootstrap, group, topic)  # the backlog stays in Kafka, not in memory
            assert det.total("detector_records_scored_total") == scored_paused < rows  # no progress while blocked
            assert det.get("/healthz")[0] == 200
            status, why = det.get("/readyz")
            assert status == 503 and "outputs blocked" in why, (status, why)
            assert det.total("detector_output_errors_total") >= 3
            if mode == "at-least-once":
                # Losing node 3 may also cost the group its coordinator (where it lives depends on the group's
                # name), which revokes once before the outage is seen; what must not happen is an eviction for not
                # polling while the outputs are blocked
                log_text = (tmp_path / "d.log").read_text()
                assert "maximum poll interval" not in log_text, "evicted for not polling during the outage"
                during = log_text[log_text.index("input paused"):]
                assert "revoked" not in during, "evicted from the group during the outage"
            assert growth < 32 * 2**20, f"RSS grew {growth / 2**20:.1f} MiB while paused"
            print(f"{mode}: alert topic unavailable; RSS change while paused {growth / 2**20:+.1f} MiB")

            cluster.start_node(2)  # the outage ends
            cluster.wait_ready()
            wait_until(lambda: committed_all(bootstrap, group, topic), 240, "caught up after the outage", 1.0)
            assert det.total("detector_consumption_paused") == 0
            assert det.total("detector_records_scored_total") >= rows
            assert det.stop() == 0
    finally:
        all_nodes_up(cluster)
    assert_alerted(bootstrap, alerts, expected, no_duplicates=mode == "exactly-once")
