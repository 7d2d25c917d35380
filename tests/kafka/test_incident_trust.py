"""What an analyst can trust, on a real broker: a benign verdict never mutes a flood of its kind, and the page
budget holds over hours that alternate between quiet and floods."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.kafka_io import read_to_end
from incidents.alert_input import alert_from_doc
from incidents.baselines import kind_key
from incidents.book import IncidentBook, Limits
from testkit import REPO, IncidentProcess, committed_all, latest_incidents, wait_until
from tests.conftest import TopicFactory
from tests.kafka.test_incidents import produce
from tests.unit.test_triage import doc

HOUR_MS, MINUTE_MS = 3_600_000, 60_000
RAMP_STEPS = 20  # ten minutes each
CAP = 20.0  # the service's --baseline-max-per-min here (fewer alerts to reach it than the default 60)


def mark_benign(bootstrap: str, svc: IncidentProcess, incident_id: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "incidents", "feedback", "--bootstrap-servers", bootstrap,
                           "--feedback-topic", svc.topics["feedback"], "--incident", incident_id, "--for-s", "86400",
                           "--analyst", "ann", "--note", "a harmless echo reply"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_benign_verdict_then_a_flood_of_its_kind_at_100x_its_rate(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                     tmp_path: Path) -> None:
    """One harmless alert of kind K marked benign, then 1,500 alerts of kind K at 100 a minute (the verdict saw
    one a minute and covers ten) and no higher severity: every one is filed, in incidents that name the verdict;
    none is suppressed."""
    alerts = make_topic("trust-flood", 1)
    t0 = int(time.time() * 1000) - 3 * HOUR_MS
    t0 -= t0 % MINUTE_MS
    with IncidentProcess(kafka_bootstrap, alerts, "--gap-s", "300", "--idle-close-s", "3600",
                         log_path=tmp_path / "i.log") as svc:
        produce(kafka_bootstrap, alerts, [doc(0, t0, severity=3.28)])
        wait_until(lambda: svc.total("incidents_alerts_total") == 1, 60, "the harmless alert filed")
        [harmless] = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        mark_benign(kafka_bootstrap, svc, harmless)
        wait_until(lambda: svc.total("incidents_suppression_rules") == 1, 60, "the verdict applied")
        start = t0 + 20 * MINUTE_MS  # after the harmless incident's gap: the flood cannot join it
        flood = [doc(1 + i, start + i * 600, severity=1.5 + (i % 17) / 10, label="smurf.") for i in range(1_500)]
        produce(kafka_bootstrap, alerts, flood)
        wait_until(lambda: svc.total("incidents_alerts_total") + svc.total("incidents_suppressed_alerts_total")
                   + svc.total("incidents_held_alerts") >= 1 + len(flood), 120, "the flood handled")
        assert svc.total("incidents_suppressed_alerts_total") == 0
        assert svc.total("incidents_held_alerts") == 0
        assert svc.total("incidents_over_verdict_alerts_total") == len(flood)
        latest = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        filed = [inc for inc in latest.values() if inc["labels"].get("smurf.")]
        assert sum(inc["alerts"] for inc in filed) == len(flood)
        assert all(inc["exceeds_verdict"] == harmless and inc["over_verdict_alerts"] == inc["alerts"] for inc in filed)
        assert max(inc["priority"] for inc in filed) > 100  # a flood ranks far above a single alert
        assert latest[harmless]["resolution"]["analyst"] == "ann"
        # the verdict's state (rate window, counts) is on the state topic for a restart
        rules = [json.loads(m.value()) for m in read_to_end({"bootstrap.servers": kafka_bootstrap}, svc.topics["state"])
                 if m.key() == f"rule:{harmless}".encode() and m.value()]
        assert rules and rules[-1]["rule"]["allowance"] == 10
        # the audit trail: who, when, why, what it covers and what broke through it
        listing = subprocess.run([sys.executable, "-m", "incidents", "verdicts", "--bootstrap-servers",
                                  kafka_bootstrap, "--feedback-topic", svc.topics["feedback"], "--state-topic",
                                  svc.topics["state"], "--json-lines"],
                                 capture_output=True, text=True, cwd=REPO, timeout=120)
        assert listing.returncode == 0, listing.stderr[-2000:]
        [row] = [json.loads(line) for line in listing.stdout.splitlines()]
        assert row["incident_id"] == harmless and row["analyst"] == "ann" and row["note"] == "a harmless echo reply"
        assert row["status"] == "in force" and row["covers"]["alerts_per_minute"] == 10
        assert row["broke_through"] == len(flood) and row["suppressed"] == 0


def test_the_page_budget_holds_over_quiet_and_flood_hours(kafka_bootstrap: str, make_topic: TopicFactory,
                                                          tmp_path: Path) -> None:
    """Eight hours of event time: quiet hours with one small burst and a few lone alerts, flood hours with twelve
    bursts of growing size. With a budget of 3 pages an hour, no trailing hour ever holds more than 3 pages, every
    hour pages something (the line falls back once a flood has left the trailing hour), and every incident says
    which side of the line it is on and why."""
    alerts = make_topic("trust-budget", 1)
    t0 = int(time.time() * 1000) - 10 * HOUR_MS
    t0 -= t0 % HOUR_MS
    docs, i = [], 0
    for hour in range(8):
        flood = hour % 2 == 1
        for burst in range(12 if flood else 1):
            # a quiet hour's burst comes late in the hour, once the last flood has left the trailing hour
            begin = t0 + hour * HOUR_MS + (burst * 4 if flood else 50) * MINUTE_MS
            for j in range(4 + 15 * burst):
                docs.append(doc(i, begin + j * 200, service=f"svc{hour}-{burst}", rank=1.0, label="neptune."))
                i += 1
        for j in range(3):  # lone, mild alerts: review
            docs.append(doc(i, t0 + hour * HOUR_MS + (55 + j) * MINUTE_MS, service=f"lone{j}", rank=0.991))
            i += 1
    with IncidentProcess(kafka_bootstrap, alerts, "--gap-s", "60", "--idle-close-s", "3600", "--page-budget", "3",
                         log_path=tmp_path / "i.log") as svc:
        produce(kafka_bootstrap, alerts, docs)
        wait_until(lambda: svc.total("incidents_alerts_total") >= len(docs), 120, "every alert filed")
        assert svc.total("incidents_page_budget") == 3
        line = svc.total("incidents_page_line")
        assert line >= 2.0
        paged_total = svc.total("incidents_paged_total")
    incidents = list(latest_incidents(kafka_bootstrap, svc.topics["incident"]).values())
    pages = sorted(inc["triage"]["paged_ms"] for inc in incidents if inc["triage"]["decision"] == "page")
    assert len(pages) == paged_total
    assert max(sum(1 for p in pages if t - HOUR_MS < p <= t) for t in pages) <= 3 + 1  # the budget and its reserve
    for hour in range(8):
        assert any(t0 + hour * HOUR_MS <= p < t0 + (hour + 1) * HOUR_MS for p in pages), f"hour {hour} paged nothing"
    for inc in incidents:
        reason = inc["triage"]["reason"]
        if inc["triage"]["decision"] == "page":
            assert ("reached the page line" in reason or "escalated" in reason) and inc["priority"] >= 2.0
        else:
            assert "below the page line" in reason or "budget of 3 pages per hour is spent" in reason
    lone = [inc for inc in incidents if inc["signature"][1].startswith("lone")]
    assert lone and all(inc["triage"]["decision"] == "review" for inc in lone)


def ramp_docs(t0: int, first_id: int) -> list[dict[str, object]]:
    """The poisoning attack's alerts: ordinary-looking (just over the line) alerts of one kind, a quarter faster
    every ten minutes of event time, from 2 to 40 a minute over two hours, then over an hour at 40 (evenly
    spaced)."""
    docs, t, i, rate = [], t0, first_id, 2.0
    for _ in range(RAMP_STEPS):
        n = int(rate * 10)
        docs += [doc(i + j, t + j * (10 * MINUTE_MS) // n, service="ramp", severity=1.5, rank=0.995)
                 for j in range(n)]
        t, i, rate = t + 10 * MINUTE_MS, i + n, min(40.0, rate * 1.25)
    return docs


def test_a_poisoned_baseline_stops_at_its_cap_across_a_sigkill_and_a_verdict_cannot_cover_a_flood(
        kafka_bootstrap: str, make_topic: TopicFactory, tmp_path: Path) -> None:
    """Issue 33's attack on the learned rates, on a real broker. Three hours of a slow ramp teach kind ``ramp`` a
    rate; the service is SIGKILLed halfway and restarts from its state topic; the rate it learned equals the
    in-process book's over the same alerts (nothing lost or taught twice) and stops at the cap (20 a minute here).
    Then a single alert of the kind is marked benign, and a flood at five times the cap is filed whole, flagged
    ``exceeds_verdict``, and pages."""
    alerts = make_topic("trust-poison", 1)
    t0 = int(time.time() * 1000) - 7 * HOUR_MS
    t0 -= t0 % MINUTE_MS
    ramp = ramp_docs(t0, 0)
    extra = ("--gap-s", "300", "--idle-close-s", "3600", "--batch-size", "500", "--baseline-max-per-min", str(CAP))
    half = len(ramp) // 2
    produce(kafka_bootstrap, alerts, ramp[:half])
    with IncidentProcess(kafka_bootstrap, alerts, *extra, log_path=tmp_path / "i.log") as svc:
        wait_until(lambda: svc.total("incidents_alerts_total") >= half // 2, 120, "part of the ramp filed")
        svc.stop(signal.SIGKILL)
    produce(kafka_bootstrap, alerts, ramp[half:])
    book = IncidentBook(gap_ms=300_000, limits=Limits(baseline_max_per_min=CAP))
    for d in ramp:
        book.add(alert_from_doc(d, 0))
    kind = ("icmp", "ramp", "SF", "service")
    with IncidentProcess(kafka_bootstrap, alerts, *extra, log_path=tmp_path / "i.log") as svc:
        wait_until(lambda: committed_all(kafka_bootstrap, svc.group, alerts), 180, "the ramp committed")
        state = {m.key(): m.value() for m in read_to_end({"bootstrap.servers": kafka_bootstrap}, svc.topics["state"])}
        learned = json.loads(state[kind_key(kind).encode()])["baseline"]
        assert learned["count"] == pytest.approx(book.baselines.kinds[kind].count, rel=1e-9)
        assert learned["active"] == pytest.approx(book.baselines.kinds[kind].active, rel=1e-9)
        assert book.baselines.per_min(kind) == CAP  # the attacker reached the cap, and no further
        t_end = t0 + RAMP_STEPS * 10 * MINUTE_MS + 10 * MINUTE_MS  # past the ramp's last incident by more than the gap
        produce(kafka_bootstrap, alerts, [doc(100_000, t_end, service="ramp", severity=3.0)])
        wait_until(lambda: committed_all(kafka_bootstrap, svc.group, alerts), 60, "the single alert committed")
        [single] = [i for i, inc in latest_incidents(kafka_bootstrap, svc.topics["incident"]).items()
                    if inc["first_seen_ms"] == t_end]
        mark_benign(kafka_bootstrap, svc, single)
        wait_until(lambda: svc.total("incidents_suppression_rules") == 1, 60, "the verdict applied")
        flood = [doc(200_000 + j, t_end + 2 * MINUTE_MS + j * 600, service="ramp", severity=2.0, label="smurf.")
                 for j in range(300)]  # 100 a minute for three minutes: five times the cap
        produce(kafka_bootstrap, alerts, flood)
        wait_until(lambda: svc.total("incidents_over_verdict_alerts_total") >= len(flood), 120, "the flood filed")
        assert svc.total("incidents_suppressed_alerts_total") + svc.total("incidents_held_alerts") == 0
        latest = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        filed = [inc for inc in latest.values() if inc["labels"].get("smurf.")]
        assert sum(inc["alerts"] for inc in filed) == len(flood)
        assert all(inc["exceeds_verdict"] == single for inc in filed)
        assert any(inc["triage"]["decision"] == "page" for inc in filed)
