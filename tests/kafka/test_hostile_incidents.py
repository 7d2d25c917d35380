"""Issue 31 on a real broker, the incident service: single messages that crash-looped it or made its state lie.

One service, one alert topic, and every attack of the issue that reaches it through the alert and feedback
topics: a lone surrogate in a category, a year-0 event time, a 900 KB schema and model version (with OCSF on),
an alert reusing a closed incident's first timestamp, a forged future stamp, then an idle spell that must
close (and publish) what went quiet; nested-JSON and surrogate verdicts that must not break the listing. After
each, the service is alive, the record is accounted for (filed or dead-lettered with a reason) and what the
topic says equals what the service says."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from core.kafka_io import read_to_end
from testkit import REPO, IncidentProcess, latest_incidents, wait_until
from tests.conftest import TopicFactory
from tests.unit.test_triage import doc

pytestmark = pytest.mark.hostile


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    errors: list[str] = []
    for v in values:
        producer.produce(topic, value=v, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
    assert producer.flush(60) == 0 and not errors


def test_hostile_alerts_and_verdicts_neither_crash_nor_make_state_lie(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                        tmp_path: Path) -> None:
    alerts, ocsf = make_topic("hostile-inc", 1), make_topic("hostile-inc-ocsf", 1)
    now = int(time.time() * 1000)
    t0 = now - 3_600_000  # an hour ago: the incidents must close by the idle rule (gap 60 s, lateness 60 s)
    surrogate = json.dumps(doc(1, t0)).replace('"ecr_i"', '"\\ud800"').encode()
    year0 = json.dumps(doc(2, t0) | {"event_time": "0001-01-01T00:00:00+14:00"}).encode()
    huge = json.dumps(doc(3, t0 + 1000, service="big") | {"schema": "s" * 440_000,
                                                           "model_version": "v" * 440_000}).encode()
    first = [json.dumps(doc(10 + i, t0 + 2000 + i, service="paged")).encode() for i in range(10)]
    clock = json.dumps(doc(30, t0 + 200_000, service="clock")).encode()  # closes "paged" by stream time
    reuse = json.dumps(doc(31, t0 + 2000, service="paged")).encode()  # the closed incident's first timestamp
    values = [surrogate, year0, huge, *first, clock]
    with IncidentProcess(kafka_bootstrap, alerts, "--gap-s", "60", "--idle-close-s", "2", "--allowed-lateness-s",
                         "60", "--ocsf-topic", ocsf, log_path=tmp_path / "i.log") as svc:
        send(kafka_bootstrap, alerts, values)
        wait_until(lambda: svc.total("incidents_alerts_total") + svc.total("incidents_unreadable_alerts_total")
                   >= len(values), 120, "every hostile alert accounted for")
        send(kafka_bootstrap, alerts, [reuse])  # after "paged" closed by stream time
        wait_until(lambda: svc.total("incidents_alerts_total") >= len(values), 120, "the reuse filed")
        assert svc.total("incidents_alerts_total") == len(values)  # all but the year-0 one, plus the reuse
        dead = list(read_to_end({"bootstrap.servers": kafka_bootstrap}, svc.topics["dlq"]))
        assert len(dead) == 1 and b"event_time" in dict(dead[0].headers())["dlq.detail"]

        # idle: every incident is an hour old, so all close, and the closes are on the topic (item 7)
        wait_until(lambda: svc.total("incidents_open") == 0, 60, "idle incidents closed")
        wait_until(lambda: all(i["status"] == "closed" for i in latest_incidents(
            kafka_bootstrap, svc.topics["incident"]).values()), 60, "the closes published")
        incidents = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        paged = [i for i in incidents.values() if i["signature"][1] == "paged"]
        assert sorted(i["alerts"] for i in paged) == [1, 10]  # the reuse did not overwrite (item 9)
        assert len({i["incident_id"] for i in paged}) == 2
        assert any("\ufffd" in "".join(i["signature"]) for i in incidents.values())  # item 1: filed, cleaned
        big = next(i for i in incidents.values() if i["signature"][1] == "big")
        assert len(json.dumps(big)) < 64 * 1024
        findings = [json.loads(m.value()) for m in read_to_end({"bootstrap.servers": kafka_bootstrap}, ocsf)]
        assert findings and max(len(m) for m in map(json.dumps, findings)) < 300_000  # item 6

        # hostile verdicts: counted as unreadable, the listing still lists (item 13)
        send(kafka_bootstrap, svc.topics["feedback"], [b"[" * 50_000 + b"]" * 50_000,
                                                       b'{"incident_id": "\\ud800", "verdict": "benign", '
                                                       b'"until_ms": 9999999999999, "analyst": "\\udfff"}'])
        wait_until(lambda: svc.total("incidents_verdicts_total") >= 2, 60, "the verdicts read")
        assert svc.alive()
        listing = subprocess.run([sys.executable, "-m", "incidents", "verdicts", "--bootstrap-servers",
                                  kafka_bootstrap, "--feedback-topic", svc.topics["feedback"], "--state-topic",
                                  svc.topics["state"]], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert listing.returncode == 0, listing.stderr[-2000:]
        assert "unreadable" in listing.stdout and "invalid" in listing.stdout

    # a restart restores exactly what the topic says: nothing open
    with IncidentProcess(kafka_bootstrap, alerts, "--gap-s", "60", "--idle-close-s", "3600",
                         log_path=tmp_path / "i2.log") as again:
        assert again.total("incidents_open") == 0
