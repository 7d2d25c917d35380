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
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    for d in docs:
        producer.produce(topic, key=d["record_id"].encode(), value=json.dumps(d).encode())
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


def test_incidents_are_exact_across_sigkill(kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path) -> None:
    docs = synthetic(30_000)
    # one partition: with several, arrival order across partitions (not just content) would decide the gaps
    clean_topic, killed_topic = make_topic("inc-clean", 1), make_topic("inc-killed", 1)
    produce(kafka_bootstrap, clean_topic, docs)
    clean = run_to_end(kafka_bootstrap, clean_topic, tmp_path)
    killed = run_to_end(kafka_bootstrap, killed_topic, tmp_path, kills=(6_000, 17_000), docs=docs)
    assert sum(inc["alerts"] for inc in clean.values()) == len(docs)
    assert len(clean) >= 10 and any(inc["status"] == CLOSED for inc in clean.values())
    assert killed == clean  # same incidents, same counts, sums, samples and statuses


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
