"""Per-kind rate baselines (``incidents.baselines``): learned from the stream, and each of their bounds attacked:
a normal service that always alerts stops paging; a quiet kind's burst still pages; clearly abnormal alerts
teach nothing; a slow ramp of ordinary-looking alerts cannot teach past the cap; a flood after a verdict on a
taught kind is filed whole; state survives a restart exactly; forged state records are refused (no broker)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from incidents import state
from incidents.alert_input import alert_from_doc
from incidents.baselines import (
    BURST_EXTRA,
    Baselines,
    KindRate,
    kind_key,
    poisson_rate_given_some,
    poisson_upper,
    teaches,
)
from incidents.book import IncidentBook, Limits
from incidents.priority import priority, rarity
from incidents.triage import HOUR_MS, PAGE
from incidents.verdicts import VerdictDoc
from tests.unit.test_triage import T0, doc

MIN = 60_000


def steady(book: IncidentBook, service: str, per_min: float, minutes: int, start_ms: int, first_id: int,
           rank: float = 0.995, seed: int = 0, label: str = "normal.") -> list[Any]:
    """Poisson arrivals of one kind at ``per_min`` for ``minutes`` of event time; the filings."""
    rng = random.Random(seed)
    t, end, i, out = float(start_ms), start_ms + minutes * MIN, first_id, []
    while True:
        t += rng.expovariate(per_min / MIN)
        if t >= end:
            return out
        out.append(book.add(alert_from_doc(doc(i, int(t), service=service, severity=1.5, rank=rank,
                                                label=label), 0)))
        i += 1


def kind_of(service: str) -> tuple[str, ...]:
    return ("icmp", service, "SF", "service")


def paged(book: IncidentBook, service: str, since_ms: int = 0) -> list[Any]:
    return [i for i in book.incidents.values()
            if i.kind == kind_of(service) and i.triage == PAGE and (i.paged_ms or 0) >= since_ms]


def busy_hours(book: IncidentBook, service: str, hours: int, first_id: int = 0) -> None:
    """A normal service busy twenty minutes of every hour at ~30 false alerts a minute, quiet in between (longer
    than the gap, so each hour is a new incident)."""
    for h in range(hours):
        steady(book, service, 30, 20, T0 + h * HOUR_MS, first_id + h * 10_000, seed=h)


def test_a_normal_service_that_always_alerts_is_learned_and_stops_paging() -> None:
    """The demo's failure: a normal service raising ~30 false alerts a minute paged every busy hour against one
    alert per gap. With its kind's rate learned, it pages while the service learns (the first hour) and never
    after, and the rate it learned is its busy minutes' rate, not diluted by its quiet ones."""
    learned = IncidentBook(gap_ms=300_000)
    busy_hours(learned, "ntp_u", 4)
    assert learned.baselines.per_min(kind_of("ntp_u")) == pytest.approx(30, rel=0.2)
    assert paged(learned, "ntp_u", since_ms=T0 + HOUR_MS) == []
    constant = IncidentBook(gap_ms=300_000, limits=Limits(baseline_max_per_min=0))  # learning off
    busy_hours(constant, "ntp_u", 4)
    assert len(paged(constant, "ntp_u", since_ms=T0 + HOUR_MS)) == 3
    assert constant.baselines.per_min(kind_of("ntp_u")) == 0.0 and state.baseline_records(constant) == []
    assert priority(rarity(0.995, 0.01) * 30, 30, 30, 300_000) > 2.0  # a minute of 30 against one per gap
    assert priority(rarity(0.995, 0.01) * 30, 30, 30, 300_000, 30.0) < 2.0  # against its kind's 30


def test_the_rate_compared_is_the_poisson_rate_of_the_kinds_active_minutes() -> None:
    for lam in (0.05, 0.5, 2.0, 30.0, 500.0):
        m = lam / (1 - math.exp(-lam))
        assert poisson_rate_given_some(m) == pytest.approx(lam, rel=1e-6)
    assert poisson_rate_given_some(1.0) == 0.0 == poisson_rate_given_some(0.3)


def test_a_burst_of_a_quiet_kind_still_pages_and_teaches_at_most_its_bound() -> None:
    book = IncidentBook(gap_ms=300_000)
    steady(book, "ntp_u", 30, 120, T0, 0)
    steady(book, "quiet", 0.2, 120, T0, 100_000, seed=1)
    before = book.baselines.per_min(kind_of("quiet"))
    burst = T0 + 120 * MIN
    for i in range(80):  # 80 ordinary-looking alerts in one minute, of a kind that raises one in five minutes
        book.add(alert_from_doc(doc(200_000 + i, burst + i * 700, service="quiet", severity=1.5, rank=0.995), 0))
    assert paged(book, "quiet", since_ms=burst)
    taught = book.baselines.kinds[kind_of("quiet")].taught
    assert taught <= 2 * before + BURST_EXTRA  # the minute's bound: the burst taught at most 2 x rate + 10


def test_clearly_abnormal_alerts_teach_nothing_however_long_they_last() -> None:
    book = IncidentBook(gap_ms=300_000)
    steady(book, "smurf", 200, 60, T0, 0, rank=1.0, label="smurf.")  # beyond calibration: q = 0.01 < 0.05
    assert not teaches(1.0, 0.01) and teaches(0.995, 0.01) and teaches(None, None)
    assert book.baselines.per_min(kind_of("smurf")) == 0.0
    assert paged(book, "smurf")


def test_a_slow_ramp_cannot_teach_past_the_cap_and_a_flood_still_pages() -> None:
    """The poisoning attack: ordinary-looking alerts of one kind, a little faster every ten minutes for five
    hours (just under what pages), to teach the kind a rate at which a flood would pass unseen."""
    cap = 60.0
    book = IncidentBook(gap_ms=300_000, limits=Limits(baseline_max_per_min=cap))
    t, i = T0, 0
    rate = 2.0
    highest = 0.0
    for step in range(30):
        steady(book, "ramp", rate, 10, t, i, seed=step)
        highest = max(highest, book.baselines.per_min(kind_of("ramp")))
        t, i, rate = t + 10 * MIN, i + 10_000, rate * 1.25
    assert highest <= cap
    assert book.baselines.per_min(kind_of("ramp")) == cap  # the attacker did reach the cap: the cap is the bound
    flood = t + 10 * MIN
    for j in range(int(poisson_upper(cap) + 3 * cap**0.5 + 5) + 1):  # a minute of ~90, each just over the line
        book.add(alert_from_doc(doc(900_000 + j, flood + j * 500, service="ramp", severity=1.5, rank=0.995), 0))
    assert paged(book, "ramp", since_ms=flood)


def test_a_verdict_covers_its_kinds_learned_variation_but_not_a_flood() -> None:
    """A verdict given on one quiet minute of a kind that normally runs at 20 a minute: the kind's next busy
    minutes stay muted (the constant allowance, ten a minute, broke on them), and a flood at five times the
    cap is filed whole, flagged ``exceeds_verdict``."""
    book = IncidentBook(gap_ms=300_000)
    steady(book, "ecr_i", 20, 120, T0, 0)
    t = T0 + 125 * MIN
    book.add(alert_from_doc(doc(500_000, t, severity=3.0), 0))
    single = next(i for i in book.incidents.values() if "500000" in json.dumps(i.sample))
    assert book.mark_benign(VerdictDoc(single.incident_id, t + 10 * HOUR_MS, t, "ann", "echo replies"))[0] \
        == "applied"
    rule = book.rules[single.incident_id]
    assert rule.allowance > 20 + 3 * 20**0.5  # the learned rate's variation, not one alert's 10 a minute
    assert rule.allowance <= 1.5 * poisson_upper(book.limits.baseline_max_per_min)
    normal = steady(book, "ecr_i", 20, 30, t + MIN, 600_000, seed=3)
    assert sum(f.over_verdict for f in normal) == 0
    flood = t + 40 * MIN
    filed = sum(book.add(alert_from_doc(doc(700_000 + j, flood + j * 200, severity=2.0, label="smurf."), 0)).filed
                for j in range(300))  # 300 in a minute: five times the cap
    assert filed == 300 and all(i.exceeds_verdict == single.incident_id
                                for i in book.incidents.values() if i.labels.get("smurf."))


def test_baselines_survive_a_restart_exactly() -> None:
    book = IncidentBook(gap_ms=300_000)
    steady(book, "ntp_u", 30, 90, T0, 0)
    steady(book, "domain_u", 5, 90, T0, 100_000, seed=2)
    records = [(key, value) for key, value in state.baseline_records(book)]
    assert state.baseline_records(book) == []  # nothing changed since
    restored = IncidentBook(gap_ms=300_000)
    for key, value in records:
        assert value is not None
        state.apply(restored, value)
        assert key == kind_key(json.loads(value)["baseline"]["kind"])
    for service in ("ntp_u", "domain_u"):
        assert restored.baselines.per_min(kind_of(service)) == book.baselines.per_min(kind_of(service)) > 0


def test_the_kinds_kept_are_bounded_and_the_forgotten_are_tombstoned() -> None:
    b = Baselines(max_kinds=100)
    for n in range(250):
        b.learn(("tcp", f"svc{n}", "SF", "count"), T0 + n)
    changed, gone = b.take_changes()
    assert len(b.kinds) == 100 and len(changed) == 100 and len(gone) == 150
    assert kind_key(("tcp", "svc0", "SF", "count")) in gone


@pytest.mark.parametrize(("field", "value"), [("count", 1e400), ("count", -1), ("kind", []), ("kind", [1]),
                                              ("kind", ["x"] * 17), ("at_ms", 1.5), ("taught", True),
                                              ("minute", 2**63), ("count", "3"), ("active", float("nan")),
                                              ("bound", None)])
def test_a_forged_baseline_record_is_refused(field: str, value: Any) -> None:
    raw = KindRate(("icmp", "ecr_i", "SF", "service"), 3.0, 2.0, T0, T0, 1, 10).to_dict() | {field: value}
    with pytest.raises(state.BAD_STATE):
        KindRate.from_dict(raw)


def test_an_idle_input_settles_what_verdicts_held_once_their_window_is_over_by_the_wall_clock() -> None:
    """Alerts held in the last window before a quiet spell used to wait for the next alert of any kind (the
    evaluation's replay ended inside a window and waited for ever)."""
    book = IncidentBook(gap_ms=300_000)
    book.add(alert_from_doc(doc(0, T0, severity=3.0), 0))
    [first] = book.incidents
    assert book.mark_benign(VerdictDoc(first, T0 + HOUR_MS, T0, "ann", "echo"))[0] == "applied"
    held = book.add(alert_from_doc(doc(1, T0 + 2 * MIN + 5_000, severity=2.0), 0))
    assert held.held and book.settle_rules()[0] == []
    assert book.settle_idle(T0 + 3 * MIN + 4_000, 5_000) == ([], set())  # the window is not over by the clock
    released, changed = book.settle_idle(T0 + 3 * MIN + 5_000, 5_000)
    assert [d["record_id"] for d, _ in released] == ["1"] and changed == {first}
    assert book.rules[first].held == [] and book.rules[first].suppressed == 1
