"""Incidents: grouping, closing and muting (pure), and the service on the real broker: exact across SIGKILL,
verdicts from the feedback command suppress (keep and count) matching alerts but not a flood of the same kind."""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from core.kafka_io import read_to_end
from core.routing import ROUTED_PRODUCER, alert_route, incident_partition, kind_route
from incidents.alert_input import alert_from_doc
from incidents.book import CLOSED, IncidentBook, kind, signature
from incidents.verdicts import VerdictDoc
from testkit import REPO, IncidentProcess, committed_all, committed_count, drain, latest_incidents, wait_until
from tests.conftest import TopicFactory

T0 = 1_700_000_000_000  # event time of the first synthetic alert (ms; in the past: future ones are clamped)


def alert(i: int, t_ms: int, service: str, top: tuple[str, str], severity: float, label: str) -> dict[str, Any]:
    return {"schema": "kdd-alert/1", "record_id": str(i), "source": {"topic": "in", "partition": 0, "offset": i},
            "event_time": dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            "severity": severity, "score": severity * 0.01, "threshold": 0.01, "label": label,
            "categories": {"protocol_type": "tcp", "service": service, "flag": "SF"},
            "top_features": [{"feature": top[0]}, {"feature": top[1]}, {"feature": "count"}]}


def synthetic(n: int, seed: int = 1, t0: int = T0) -> list[dict[str, Any]]:
    """A flood (http, severe, steady), a trickle of mild false alerts (smtp), and bursts with quiet gaps."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = t0 + i * 20  # 50 alerts per second of event time
        r = rng.random()
        if r < 0.7:
            out.append(alert(i, t, "http", ("src_bytes", "count"), rng.uniform(20, 60), "smurf."))
        elif r < 0.9:
            out.append(alert(i, t, "smtp", ("dst_bytes", "hot"), rng.uniform(1.0, 1.9), "normal."))
        elif (i // 2000) % 2 == 0:  # bursts of 40 s, then 40 s of nothing: each burst is its own incident
            out.append(alert(i, t, "ftp", ("duration", "hot"), rng.uniform(2, 3.9), "warezclient."))
        else:
            out.append(alert(i, t, "http", ("src_bytes", "count"), rng.uniform(20, 60), "smurf."))
    return out


def test_book_groups_by_signature_closes_after_the_gap_and_mutes_only_milder_alerts() -> None:
    book = IncidentBook(gap_ms=30_000)
    alerts = [alert_from_doc(a, 0) for a in synthetic(10_000)]
    for a in alerts:
        book.add(a)
    book.close_quiet()
    by_service: dict[str, list[Any]] = {}
    for inc in book.incidents.values():
        by_service.setdefault(inc.signature[1], []).append(inc)
    ftp = sorted(by_service["ftp"], key=lambda inc: inc.first_seen_ms)
    assert len(ftp) == 3 and all(inc.status == CLOSED for inc in ftp[:-1])  # bursts split by the quiet gaps
    assert sum(inc.alerts for inc in book.incidents.values()) == len(alerts)
    smtp = by_service["smtp"][0]
    assert set(smtp.labels) == {"normal."} and smtp.max_severity < 2
    outcome, rule = book.mark_benign(VerdictDoc(smtp.incident_id, T0 + 10**9, T0, "test", "why"))
    assert outcome == "applied" and rule is not None and rule.kind == ("tcp", "smtp", "SF", "dst_bytes")
    assert smtp.status == CLOSED and smtp.resolution is not None and smtp.resolution["analyst"] == "test"
    mild = alert_from_doc(alert(1, T0, "smtp", ("dst_bytes", "other"), 1.5, "normal."), 0)
    severe = alert_from_doc(alert(2, T0, "smtp", ("dst_bytes", "other"), 30.0, "neptune."), 0)
    k = kind(mild)
    assert rule.matches(k, mild.severity, T0) and not rule.matches(kind(severe), severe.severity, T0)
    assert k == rule.kind and signature(mild) != signature(severe)
    assert not rule.matches(k, mild.severity, T0 + 10**9 + 1)  # the verdict expired
    assert book.mark_benign(VerdictDoc("no-such-incident", T0, T0, "", ""))[0] == "unknown_incident"


def produce(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> None:
    """Alerts as the detector writes them: keyed by their kind's route (``core.routing``), murmur2."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10,
                         **ROUTED_PRODUCER})
    for d in docs:
        top = d.get("top_features") or [{}]
        key = alert_route(d.get("categories", {}).values(), top[0].get("feature")) if "categories" in d \
            else d["record_id"]
        producer.produce(topic, key=key.encode(), value=json.dumps(d).encode())
        producer.poll(0)
    assert producer.flush(60) == 0


def run_to_end(bootstrap: str, alerts: str, tmp: Path, kills: tuple[int, ...] = (),
               docs: list[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Run the service over ``alerts`` until all is committed, SIGKILLing it once the group has committed
    ``kills[i]`` alerts. With ``docs``, the input arrives in segments (up to each kill point plus 3,000), so each
    kill lands with alerts still waiting however fast the service is (once, all 30,000 were filed before the
    kill meant for 6,000 landed, and the restarted service had nothing left to do)."""
    extra = ("--gap-s", "30", "--idle-close-s", "3600", "--batch-size", "700")
    produced = 0
    for at in kills:
        if docs is not None:
            produce(bootstrap, alerts, docs[produced : at + 3_000])
            produced = min(at + 3_000, len(docs))
        svc = IncidentProcess(bootstrap, alerts, *extra, log_path=tmp / "incidents.log").start()
        try:
            wait_until(lambda at=at, svc=svc: committed_count(bootstrap, svc.group, alerts) >= at, 300,
                       f"{at} alerts committed")
        finally:
            svc.stop(signal.SIGKILL)  # also when the wait failed: no service outlives its test
    if docs is not None:
        produce(bootstrap, alerts, docs[produced:])
    with IncidentProcess(bootstrap, alerts, *extra, log_path=tmp / "incidents.log") as svc:
        wait_until(lambda: committed_all(bootstrap, svc.group, alerts), 180, "every alert committed")
        assert svc.stop() == 0
    return latest_incidents(bootstrap, svc.topics["incident"])


class Group:
    """Two incident-service instances in one consumer group over ``alerts`` (issue 32): each with a
    transactional id and a static group member id of its own, as a StatefulSet gives its pods."""

    def __init__(self, bootstrap: str, alerts: str, tmp: Path) -> None:
        self.bootstrap, self.alerts, self.tmp = bootstrap, alerts, tmp
        self.procs: list[IncidentProcess | None] = [None, None]

    def start(self, i: int) -> IncidentProcess:
        # a dead member's partitions move after 6 s (not the default 45 s), so a failover happens in the test
        extra = ("--gap-s", "30", "--idle-close-s", "3600", "--batch-size", "700", "--transactional-id",
                 f"tx-inc-{self.alerts}-{i}", "--group-instance-id", f"inc-{i}", "-X", "session.timeout.ms=6000")
        proc = IncidentProcess(self.bootstrap, self.alerts, *extra, log_path=self.tmp / f"incidents-{i}.log").start()
        self.procs[i] = proc
        return proc

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        assert proc is not None
        proc.stop(signal.SIGKILL)

    def owns(self, i: int, n: int) -> bool:
        """Whether instance i says it owns n partitions (its /readyz)."""
        proc = self.procs[i]
        return proc is not None and f" {n} of " in proc.get("/readyz")[1]

    def committed(self, n: int) -> bool:
        return committed_count(self.bootstrap, f"inc-{self.alerts}", self.alerts) >= n

    def close(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.alive():
                proc.stop(signal.SIGKILL)


def twelve_kinds(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The synthetic traffic as twelve kinds (each pattern on four services), so four partitions hold several."""
    for d in docs:
        d["categories"]["service"] += str(int(d["record_id"]) % 4)
    return docs


def test_a_group_writes_the_incidents_one_instance_does_across_sigkills_and_a_failover(
        kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path) -> None:
    """Issue 32: the same alerts on four partitions, through one instance and through a group of two. In the
    group, instance 1 is SIGKILLed and restarted (its partitions come back to it, restored from Kafka); then
    instance 0 is SIGKILLed and stays down until instance 1 owns all four partitions (a failover), and comes back
    (a rebalance moves partitions back). A verdict given while instance 0 is down reaches the partition of its
    kind and still holds after that partition moved. The incident records equal the single instance's, incident
    for incident, each on its kind's partition; pages stay within the one budget."""
    docs = twelve_kinds(synthetic(24_000))
    one_topic, group_topic = make_topic("inc-one", 4), make_topic("inc-group", 4)
    produce(kafka_bootstrap, one_topic, docs)
    one = run_to_end(kafka_bootstrap, one_topic, tmp_path)
    group = Group(kafka_bootstrap, group_topic, tmp_path)
    try:
        produce(kafka_bootstrap, group_topic, docs[:9_000])
        group.start(0)
        group.start(1)
        wait_until(lambda: group.committed(5_000), 300, "5,000 alerts committed")
        group.kill(1)
        group.start(1)
        produce(kafka_bootstrap, group_topic, docs[9_000:18_000])
        wait_until(lambda: group.committed(12_000), 300, "12,000 alerts committed")
        group.kill(0)
        wait_until(lambda: group.owns(1, 4), 120, "instance 1 owns every partition")
        produce(kafka_bootstrap, group_topic, docs[18_000:])
        wait_until(lambda: group.committed(len(docs)), 300, "every alert committed")
        got = latest_incidents(kafka_bootstrap, f"{group_topic}.incidents")
        assert got == one  # same incidents, ids, counts, sums, samples, pages and statuses
        where = {m.key().decode(): m.partition() for m in read_to_end({"bootstrap.servers": kafka_bootstrap},
                                                                       f"{group_topic}.incidents")}
        # a verdict on a mild smtp incident of a partition instance 0 will own again
        benign = sorted(i for i, inc in got.items() if set(inc["labels"]) == {"normal."} and where[i] in (0, 1))[0]
        proc = subprocess.run([sys.executable, "-m", "incidents", "feedback", "--bootstrap-servers", kafka_bootstrap,
                               "--feedback-topic", f"{group_topic}.feedback", "--incident", benign, "--for-s",
                               "3600", "--analyst", "test"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        instance_1 = group.procs[1]
        assert instance_1 is not None
        wait_until(lambda: instance_1.total("incidents_suppression_rules") == 1, 60, "the verdict applied")
        group.start(0)
        wait_until(lambda: group.owns(0, 2) and group.owns(1, 2), 120, "partitions shared again")
        service = got[benign]["signature"][1]
        t = max(inc["last_seen_ms"] for inc in got.values()) + 1_000
        later = [alert(900_000 + i, t + i * 20, service, ("dst_bytes", "hot"), 1.2, "normal.") for i in range(50)]
        # time moves on in that partition (event time is a partition's own): the window ends, what it held is kept
        later.append(alert(999_999, t + 180_000, service, ("dst_bytes", "hot"), 30.0, "neptune."))
        produce(kafka_bootstrap, group_topic, later)
        kept = drain(kafka_bootstrap, f"{group_topic}.suppressed", 50)
        assert sorted(int(json.loads(m.value())["record_id"]) for m in kept) == list(range(900_000, 900_050))
        owner = group.procs[0]
        assert owner is not None and owner.total("incidents_suppressed_alerts_total") == 50  # the new owner held
    finally:
        group.close()
    assert sum(inc["alerts"] for inc in one.values()) == len(docs)
    assert len(one) >= 20 and any(inc["status"] == CLOSED for inc in one.values())
    # each incident was written to the partition its kind's alerts are on (where a verdict on it is routed)
    kind_at = {m.key().decode(): m.partition() for m in read_to_end({"bootstrap.servers": kafka_bootstrap},
                                                                      group_topic)}
    assert {i: kind_at[kind_route(inc["kind"])] for i, inc in got.items()} == {i: where[i] for i in got} == {
        i: incident_partition(i) for i in got}
    assert len(set(where.values())) >= 3  # the kinds spread over the partitions
    pages = sum(inc["triage"]["decision"] == "page" for inc in one.values())
    assert 1 <= pages <= 20 + 4, pages  # the page budget and its reserve, over all partitions


def test_feedback_mutes_the_benign_kind_but_not_a_flood(kafka_bootstrap: str, make_topic: TopicFactory,
                                                         tmp_path: Path) -> None:
    """A verdict on the mild smtp trickle: later alerts of that kind at the same rate are held, then suppressed
    (kept and counted) once their window ends; far more severe ones of the same kind still form an incident."""
    alerts = make_topic("inc-fb", 1)
    t0 = int(time.time() * 1000) - 600_000  # verdicts last from now on: these alerts happened in the last minutes
    first = synthetic(5_000, t0=t0)
    produce(kafka_bootstrap, alerts, first)
    with IncidentProcess(kafka_bootstrap, alerts, "--gap-s", "3600", log_path=tmp_path / "i.log") as svc:
        wait_until(lambda: svc.total("incidents_alerts_total") >= len(first), 120, "the first alerts filed")
        incidents = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        benign = [i for i, inc in incidents.items() if set(inc["labels"]) == {"normal."}]
        assert len(benign) == 1
        proc = subprocess.run([sys.executable, "-m", "incidents", "feedback", "--bootstrap-servers", kafka_bootstrap,
                               "--feedback-topic", svc.topics["feedback"], "--incident", benign[0], "--for-s", "3600",
                               "--analyst", "test"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        wait_until(lambda: svc.total("incidents_suppression_rules") == 1, 60, "the verdict applied")
        t = t0 + 5_000 * 20
        later = [alert(100_000 + i, t + i * 20, "smtp", ("dst_bytes", "num_root"), 1.2 + i / 1000, "normal.")
                 for i in range(300)]  # the benign kind, no more severe and no faster than before: muted
        later += [alert(200_000 + i, t + i * 20, "smtp", ("dst_bytes", "hot"), 25.0, "neptune.")
                  for i in range(200)]  # a flood of the same kind, far more severe: still an incident
        later.append(alert(300_000, t + 180_000, "http", ("src_bytes", "count"), 30.0, "smurf."))  # time moves on
        produce(kafka_bootstrap, alerts, later)
        wait_until(lambda: svc.total("incidents_alerts_total") + svc.total("incidents_suppressed_alerts_total")
                   >= len(first) + len(later), 120, "the later alerts handled")
        assert svc.total("incidents_suppressed_alerts_total") == 300
        assert svc.total("incidents_held_alerts") == 0
        kept = drain(kafka_bootstrap, svc.topics["suppressed"], 300)
        assert sorted(int(json.loads(m.value())["record_id"]) for m in kept) == list(range(100_000, 100_300))
        assert {json.loads(m.value())["suppressed_by"] for m in kept} == {benign[0]}
        latest = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        flood = [inc for inc in latest.values() if inc["labels"].get("neptune.")]
        assert sum(inc["alerts"] for inc in flood) == 200
        assert latest[benign[0]]["resolution"]["analyst"] == "test" and latest[benign[0]]["status"] == CLOSED
