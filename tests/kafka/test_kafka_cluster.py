"""Three real brokers (RF 3, min.insync.replicas 2, acks=all) and the faults only a cluster can have: a node
lost mid-stream, nodes lost and coming back while the detector runs, and the alert topic's broker down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from core import timebounds
from core.records import read_records
from core.routing import ROUTED_PRODUCER, alert_route
from deploy.kafka import local_kafka
from testkit import (
    REPO,
    DetectorProcess,
    IncidentProcess,
    assert_alerted,
    committed_all,
    committed_count,
    committed_records,
    drain,
    latest_incidents,
    offline_alert_ids,
    produce_rows,
    record_ends,
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
            # a transactional retry waits out its abort (up to 30 s): one more shows a lasting outage just as well
            more = 3 if mode == "at-least-once" else 1
            wait_until(lambda: det.total("detector_output_retries_total") >= retries + more, 120, "a lasting outage")
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


def test_three_detectors_and_three_incident_services_lose_one_each_to_sigkill(
        cluster: local_kafka.LocalKafka, small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    """Issue 32, on three nodes: a 12-partition replay through 3 detectors (exactly once) and 3 incident
    services, one of each SIGKILLed mid-replay and restarted. Every record is scored once, the alerts are the
    offline ones, the incidents equal a single instance's over the same alerts, pages stay within the one
    budget, and a verdict applied by one instance holds on another once that one owns its partition."""
    rows, bootstrap = 40_000, cluster.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = create_topic(admin, "scale", 12, 3, {"min.insync.replicas": "2"})
    alerts, group = f"{topic}-alerts", f"g-{topic}"
    expected, _ = offline_alert_ids(small_bundle, read_records(kdd_path, limit=rows, keep_raw=True))
    fast = ("-X", "session.timeout.ms=6000")  # a dead member's partitions move after 6 s, not 45

    def detector(i: int) -> DetectorProcess:
        return DetectorProcess(bootstrap, topic, alerts, small_bundle, "--exactly-once", "--transactional-id",
                               f"tx-{topic}-{i}", "--group-instance-id", f"det-{i}", *fast, group=group,
                               log_path=tmp_path / f"d{i}.log")

    def incidents(i: int) -> IncidentProcess:
        return IncidentProcess(bootstrap, alerts, "--transactional-id", f"tx-inc-{topic}-{i}", "--group-instance-id",
                               f"inc-{i}", "--idle-close-s", "3600", "--batch-size", "500", *fast,
                               log_path=tmp_path / f"i{i}.log")

    dets = [detector(i).start() for i in range(3)]
    incs = [incidents(i).start() for i in range(3)]
    try:
        replay = start_replay(bootstrap, topic, kdd_path, rows, 4000, log_path=tmp_path / "p.log")
        wait_until(lambda: committed_count(bootstrap, group, topic) >= 12_000, 180, "12,000 records committed")
        dets[1].stop(signal.SIGKILL)
        dets[1] = detector(1).start()
        wait_until(lambda: committed_count(bootstrap, incs[0].group, alerts) >= len(expected) // 3, 180,
                   "a third of the alerts filed")
        incs[1].stop(signal.SIGKILL)
        incs[1] = incidents(1).start()
        assert replay.wait(timeout=240) == 0, (tmp_path / "p.log").read_text()[-3000:]
        wait_until(lambda: committed_all(bootstrap, group, topic), 240, "every record committed", 1.0)
        assert committed_count(bootstrap, group, topic) == rows  # every record accounted for, none dead-lettered
        assert_alerted(bootstrap, alerts, expected, no_duplicates=True)
        ends = record_ends(bootstrap, alerts)  # written in transactions: each partition ends in a commit marker
        wait_until(lambda: committed_records(bootstrap, incs[0].group, alerts, ends), 240, "every alert filed", 1.0)
        grouped = latest_incidents(bootstrap, incs[0].topics["incident"])
        with IncidentProcess(bootstrap, alerts, "--idle-close-s", "3600", name=f"{topic}-one",
                             log_path=tmp_path / "one.log") as one:
            wait_until(lambda: committed_records(bootstrap, one.group, alerts, ends), 240, "the single instance done",
                       1.0)
            assert latest_incidents(bootstrap, one.topics["incident"]) == grouped  # incident for incident
        assert sum(inc["alerts"] for inc in grouped.values()) == len(expected)
        pages = sum(inc["triage"]["decision"] == "page" for inc in grouped.values())
        assert 1 <= pages <= 20 + 4, pages  # the page budget and its reserve, over the whole group
        verdict_moves_with_its_partition(bootstrap, alerts, incs, grouped)
    finally:
        for proc in [*dets, *incs]:
            if proc.alive():
                proc.stop(signal.SIGKILL)
        all_nodes_up(cluster)


def verdict_moves_with_its_partition(bootstrap: str, alerts: str, incs: list[IncidentProcess],
                                     grouped: dict[str, dict]) -> None:
    """A verdict on a mostly normal incident, applied by the instance owning its kind's partition; that instance
    is SIGKILLed; once the survivors own every partition, mild alerts of the kind are suppressed by one of them."""
    benign = max((i for i, inc in grouped.items() if max(inc["labels"], key=inc["labels"].get) == "normal."),
                 key=lambda i: grouped[i]["alerts"])
    proc = subprocess.run([sys.executable, "-m", "incidents", "feedback", "--bootstrap-servers", bootstrap,
                           "--feedback-topic", incs[0].topics["feedback"], "--incident", benign, "--for-s", "3600",
                           "--analyst", "test"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wait_until(lambda: sum(p.total("incidents_suppression_rules") for p in incs) == 1, 60, "the verdict applied")
    owner = next(i for i, p in enumerate(incs) if p.total("incidents_suppression_rules") == 1)
    incs[owner].stop(signal.SIGKILL)
    survivors = [p for i, p in enumerate(incs) if i != owner]
    wait_until(lambda: sum(int(p.get("/readyz")[1].split(" in ")[1].split(" of ")[0]) for p in survivors) == 12,
               120, "the survivors own every partition")
    # restoring waits out any transaction the dead owner left open (transaction.timeout.ms, 60 s): then the rule is
    # the new owner's, from the state topic or from the verdict the dead owner never committed reading
    wait_until(lambda: sum(p.total("incidents_suppression_rules") for p in survivors) == 1, 180,
               "the verdict restored by the partition's new owner", 1.0)
    inc = grouped[benign]
    kind = inc["kind"]
    # in the minute before the incident's last alert: a window its partition's time has already passed, so the
    # held alerts settle at once (an alert stamped ahead of the wall clock is taken as now, and the wall clock
    # would have to reach the window's end first)
    t = (inc["last_seen_ms"] // 60_000 - 1) * 60_000
    mild = [_alert_doc(f"mild-{j}", kind, min(inc["max_severity"], 1.01), t + j) for j in range(5)]
    producer = Producer({"bootstrap.servers": bootstrap, **ROUTED_PRODUCER})
    for d in mild:
        key = alert_route(d["categories"].values(), d["top_features"][0]["feature"])  # as the detector keys it
        producer.produce(alerts, key=key.encode(), value=json.dumps(d).encode())
    assert producer.flush(30) == 0
    kept = drain(bootstrap, incs[0].topics["suppressed"], 5, timeout_s=60)
    assert sorted(json.loads(m.value())["record_id"] for m in kept) == [d["record_id"] for d in mild]
    wait_until(lambda: sum(p.total("incidents_suppressed_alerts_total") for p in survivors) == 5, 30,
               "the suppressions counted")


def _alert_doc(record_id: str, kind: list[str], severity: float, t_ms: int) -> dict[str, object]:
    """An alert of ``kind`` (KDD's categories, then the worst feature) as the detector writes one."""
    return {"schema": "kdd-alert/1", "record_id": record_id, "source": {"topic": "in", "partition": 0, "offset": 0},
            "event_time": timebounds.iso(t_ms), "severity": severity, "score": severity, "threshold": 1.0,
            "normal_rank": 0.995, "threshold_fpr": 0.01, "label": "normal.",
            "categories": dict(zip(("protocol_type", "service", "flag"), kind[:3], strict=True)),
            "top_features": [{"feature": kind[3]}]}
