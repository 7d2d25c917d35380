"""The pure parts of what an analyst receives: priority, verdict rules bounded by rate, the page budget, and the
validation of the incident service's inputs (no broker)."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from incidents.alert_input import AlertError, alert_from_doc, parse_alert
from incidents.book import IncidentBook
from incidents.priority import log_chi2_sf_even, log_poisson_tail, priority, rarity
from incidents.triage import HOUR_MS, PAGE, REVIEW, Budget
from incidents.verdicts import (
    HOLD_MAX,
    WINDOW_MS,
    Rule,
    VerdictDoc,
    VerdictError,
    allowance_for,
    offer,
    rate_upper_bound,
)

T0 = 1_800_000_000_000 - 1_800_000_000_000 % WINDOW_MS  # a window boundary


def doc(i: int, t_ms: int, *, service: str = "ecr_i", top: str = "service", severity: float = 3.0,
        rank: float | None = 0.995, label: str = "normal.") -> dict[str, Any]:
    return {"schema": "kdd-alert/1", "record_id": str(i), "source": {"topic": "in", "partition": 0, "offset": i},
            "event_time": dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            "severity": severity, "normal_rank": rank, "threshold_fpr": 0.01, "label": label,
            "categories": {"protocol_type": "icmp", "service": service, "flag": "SF"},
            "top_features": [{"feature": top}, {"feature": "src_bytes"}, {"feature": "count"}]}


# ------------------------------------------------------------------------------------------ priority
@pytest.mark.parametrize(("x", "dof"), [(1.0, 2), (10.0, 4), (50.0, 20), (300.0, 100), (90.0, 120), (400.0, 118)])
def test_chi2_tail_matches_scipy_where_scipy_is_finite(x: float, dof: int) -> None:
    assert log_chi2_sf_even(x, dof) == pytest.approx(stats.chi2.logsf(x, dof), rel=1e-6)


@pytest.mark.parametrize(("x", "dof"), [(2000.0, 1000), (5000.0, 3000), (900.0, 802)])
def test_chi2_tail_approximation_is_close_for_many_alerts(x: float, dof: int) -> None:
    assert log_chi2_sf_even(x, dof) == pytest.approx(stats.chi2.logsf(x, dof), rel=0.01)


@pytest.mark.parametrize(("k", "mu"), [(1, 1.0), (3, 1.0), (50, 1.03), (5, 10.0), (10, 9.5), (40, 30.0)])
def test_poisson_tail_matches_scipy(k: int, mu: float) -> None:
    assert log_poisson_tail(k, mu) == pytest.approx(stats.poisson.logsf(k - 1, mu), rel=1e-6)


def test_a_flood_has_a_finite_priority_that_keeps_growing() -> None:
    small, big = priority(9.2 * 1_000, 1_000, 1_000, 300_000), priority(9.2 * 80_000, 80_000, 5_000, 300_000)
    assert math.isfinite(big) and big > small > 100


def test_priority_weighs_rarity_and_speed_not_mere_alerts() -> None:
    gap = 300_000
    mild_trickle = priority(rarity(0.9901, 0.01) * 300, 300, 2, gap)  # 300 just over the line, two a minute at most
    rare_pair = priority(rarity(1.0, 0.01) * 2, 2, 2, gap)  # two beyond anything in calibration, in one minute
    fast_mild = priority(rarity(0.995, 0.01) * 200, 200, 200, gap)  # 200 middling alerts in one minute
    assert mild_trickle < 1.0 < 2.0 < rare_pair < fast_mild
    assert priority(rarity(1.0, 0.01), 1, 1, gap) < 2.0  # a single alert never reaches the default floor
    assert priority(rarity(1.0, 0.01), 1, 1, 3_600_000) == priority(rarity(1.0, 0.01), 1, 1, 60_000)  # gap-free
    assert rarity(None, None) == 0.0 and rarity(0.99, 0.01) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------------ verdicts
def test_allowance_is_the_upper_bound_of_the_rate_the_analyst_saw_times_the_margin() -> None:
    assert rate_upper_bound(1) == pytest.approx(stats.chi2.ppf(0.99, 4) / 2, rel=0.01)
    assert rate_upper_bound(100) == pytest.approx(stats.chi2.ppf(0.99, 202) / 2, rel=0.01)
    assert allowance_for(1, 0, 1.5) == 10  # one alert: up to 6.6 a minute, times 1.5
    assert allowance_for(300, 10_000, 1.5) == 515  # 300 in ten seconds counts as 300 in a minute
    assert allowance_for(600, 600_000, 1.5) == 99  # 600 over ten minutes: 60 a minute, bound 66


def test_a_verdict_holds_within_its_rate_and_files_the_whole_window_beyond_it() -> None:
    rule = Rule("v", ("icmp",), 5.0, T0 + 10 * HOUR_MS, allowance=2, decided_ms=T0, analyst="a", note="n")
    entry = [{"alert": {"record_id": str(i)}, "event_ms": T0 + i} for i in range(5)]
    assert offer([rule], entry[0], T0) == ([], [], None) and offer([rule], entry[1], T0 + 1) == ([], [], None)
    done, filed, exceeds = offer([rule], entry[2], T0 + 2)  # the third in a window of allowance 2: all filed
    assert done == [] and filed == entry[:3] and exceeds == "v" and rule.held == []
    assert offer([rule], entry[3], T0 + 3) == ([], [entry[3]], "v")  # the window stays broken
    # the next window starts broken (the last one passed the allowance) and heals after a quiet one
    assert offer([rule], entry[4], T0 + WINDOW_MS) == ([], [entry[4]], "v")
    assert offer([rule], entry[0], T0 + 2 * WINDOW_MS) == ([], [], None)  # one alert in the broken window: healed
    assert rule.roll(T0 + 3 * WINDOW_MS) == [entry[0]]  # held to the end of its window, then suppressed
    assert rule.suppressed == 1 and rule.broke_through == 5


def test_verdicts_on_one_kind_cover_the_sum_of_their_rates_and_break_together() -> None:
    a = Rule("a", ("icmp",), 5.0, T0 + HOUR_MS, allowance=2, decided_ms=T0, analyst="", note="")
    b = Rule("b", ("icmp",), 5.0, T0 + HOUR_MS, allowance=3, decided_ms=T0, analyst="", note="")
    entries = [{"alert": {"record_id": str(i)}, "event_ms": T0} for i in range(6)]
    assert all(offer([a, b], e, T0)[1] == [] for e in entries[:5])  # 2 + 3 held
    done, filed, exceeds = offer([a, b], entries[5], T0)
    assert filed == entries and exceeds == "a" and a.broken and b.broken and not a.held and not b.held


def test_held_alerts_are_bounded_whatever_the_allowance() -> None:
    rule = Rule("v", ("icmp",), 5.0, T0 + HOUR_MS, allowance=10 * HOLD_MAX, decided_ms=T0, analyst="", note="")
    suppressed_now = 0
    for _ in range(3 * HOLD_MAX):
        done, filed, _exceeds = offer([rule], {"alert": {}, "event_ms": T0}, T0)
        suppressed_now += len(done)
        assert filed == []
    assert len(rule.held) == HOLD_MAX and suppressed_now == 2 * HOLD_MAX
    assert Rule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule  # the state record round-trips


def test_a_benign_verdict_then_a_flood_of_the_same_kind_files_every_flood_alert() -> None:
    """The failure issue 20 found: one harmless echo reply marked benign muted a smurf flood of the same kind
    and no higher severity. Now the flood, at 100 times the rate the verdict saw, is filed whole."""
    book = IncidentBook(gap_ms=300_000)
    book.add(alert_from_doc(doc(0, T0, severity=3.28), 0))
    [harmless] = book.incidents.values()
    verdict = VerdictDoc(harmless.incident_id, T0 + 10 * HOUR_MS, T0, "ann", "echo reply")
    assert book.mark_benign(verdict)[0] == "applied"
    assert book.rules[harmless.incident_id].allowance == 10
    flood_start = T0 + 10 * WINDOW_MS
    filed, suppressed = 0, 0
    for i in range(1_000):  # 100 a minute: 100 times the verdict's one a minute
        f = book.add(alert_from_doc(doc(1 + i, flood_start + i * 600, severity=2.0, label="smurf."), 0))
        filed += f.filed
        suppressed += len(f.suppressed)
    more, _, _ = book.settle_rules()
    assert suppressed + len(more) == 0 and filed == 1_000
    flood = [inc for inc in book.incidents.values() if inc.labels.get("smurf.")]
    assert sum(inc.alerts for inc in flood) == 1_000
    assert all(inc.exceeds_verdict == harmless.incident_id for inc in flood)
    # the same kind at the rate the analyst saw is still muted: one alert in a later window
    later = T0 + 60 * WINDOW_MS
    f = book.add(alert_from_doc(doc(5_000, later, severity=2.0), 0))
    assert f.held and f.filed == 0
    book.stream_ms = later + WINDOW_MS
    suppressed_later, _, _ = book.settle_rules()
    assert [d["record_id"] for d, _ in suppressed_later] == ["5000"]


def test_the_service_clamps_and_counts_verdicts() -> None:
    book = IncidentBook(gap_ms=300_000)
    book.limits = type(book.limits)(max_verdict_ms=HOUR_MS, max_rules=1, rate_margin=2.0)
    book.add(alert_from_doc(doc(0, T0), 0))
    book.add(alert_from_doc(doc(1, T0, service="ftp"), 0))
    first, second = list(book.incidents)
    outcome, rule = book.mark_benign(VerdictDoc(first, T0 + 365 * 24 * HOUR_MS, T0, "a", ""))
    assert outcome == "applied" and isinstance(rule, Rule) and rule.until_ms == T0 + HOUR_MS  # clamped
    assert book.mark_benign(VerdictDoc(first, T0 + HOUR_MS, T0, "a", ""))[0] == "duplicate"
    assert book.mark_benign(VerdictDoc(second, T0 + HOUR_MS, T0, "a", ""))[0] == "too_many_rules"
    book.stream_ms = T0 + 2 * HOUR_MS
    _, _, removed = book.settle_rules()
    assert removed == {first} and not book.rules  # expired rules are pruned


@pytest.mark.parametrize("raw", [None, 1, [], "x", {"incident_id": ""}, {"incident_id": "i", "verdict": "benign"},
                                 {"incident_id": "i", "verdict": "benign", "until_ms": 1e400},
                                 {"incident_id": "i", "verdict": "benign", "until_ms": float("nan")},
                                 {"incident_id": "i", "verdict": "benign", "until_ms": True},
                                 {"incident_id": "i", "verdict": "benign", "until_ms": 1, "analyst": 5}])
def test_bad_verdicts_are_refused_with_a_reason(raw: Any) -> None:
    with pytest.raises(VerdictError):
        VerdictDoc.parse(raw)


# ------------------------------------------------------------------------------------------ budget
def test_budget_pages_at_most_n_per_trailing_hour_and_the_line_follows_the_traffic() -> None:
    budget = Budget(per_hour=3, floor=2.0)
    assert budget.decide(1.0, T0)[0] == REVIEW and "below the page line 2.0" in budget.decide(1.0, T0)[1]
    assert [budget.decide(10.0, T0 + i)[0] for i in range(5)] == [PAGE, PAGE, PAGE, REVIEW, REVIEW]
    assert "budget of 3 pages per hour is spent" in budget.decide(19.0, T0 + 10)[1]  # under 2x the strongest
    decision, why = budget.decide(50.0, T0 + 11)  # far stronger: escalated from the reserve (one page)
    assert decision == PAGE and "escalated" in why and "reserve page 1 of 1" in why
    assert budget.decide(5000.0, T0 + 12)[0] == REVIEW  # the reserve is spent too
    assert budget.decide(10.0, T0 + HOUR_MS + 1)[0] == PAGE  # the trailing hour moved on
    assert budget.recompute([5.0, 40.0, 30.0, 20.0, 1.0]) == 20.0  # the 3rd best of the hour
    assert budget.recompute([5.0, 1.0]) == 2.0  # fewer incidents than the budget: back to the floor
    restored = Budget(per_hour=3, floor=2.0)
    restored.restore(json.loads(json.dumps(budget.to_dict())))
    assert restored == budget


def test_book_pages_the_strongest_incidents_within_the_budget_over_many_hours() -> None:
    book = IncidentBook(gap_ms=60_000, budget=Budget(per_hour=4, floor=2.0))
    i = 0
    for hour in range(6):
        for burst in range(10 if hour % 2 else 1):  # flood hours with ten bursts, quiet hours with one
            start = T0 + hour * HOUR_MS + burst * 5 * WINDOW_MS
            for j in range(5 + 20 * burst):
                book.add(alert_from_doc(doc(i, start + j * 100, service=f"s{hour}-{burst}", rank=1.0,
                                            label="neptune."), 0))
                i += 1
    pages = sorted(inc.paged_ms for inc in book.incidents.values() if inc.paged_ms is not None)
    assert all(sum(1 for p in pages if t - HOUR_MS < p <= t) <= 4 + 1 for t in pages)  # budget and reserve
    assert len(pages) >= 6  # each hour pages something: the quiet ones their one burst
    reviewed = [inc for inc in book.incidents.values() if inc.triage == REVIEW]
    assert reviewed and all("page line" in inc.triage_reason for inc in reviewed)


# ------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize(("value", "reason"), [
    (b"null", "not_an_object"), (b"1", "not_an_object"), (b"[]", "not_an_object"), (b"{", "not_json"),
    (b"[" * 100_000, "not_json"), (b'{"severity": NaN}', "bad_field"), (b'{"severity": 1e400}', "bad_field"),
    (b'{"severity": "inf"}', "bad_field"), (b'{"severity": 2, "categories": []}', "bad_field"),
    (b'{"severity": 2, "source": []}', "bad_field"), (b'{"severity": 2, "top_features": "x"}', "bad_field"),
    (b'{"severity": 2, "event_time": "9999999-01-01"}', "bad_field"), (b'{"severity": 2, "label": {}}', "bad_field"),
    (b'{"severity": 2, "normal_rank": 2}', "bad_field"), (b'{"severity": true}', "bad_field"),
])
def test_hostile_alerts_are_refused_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(AlertError) as err:
        parse_alert(value, 0)
    assert err.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=6), max_leaves=30),
       st.dictionaries(st.sampled_from(["severity", "categories", "top_features", "source", "event_time", "label",
                                        "record_id", "normal_rank", "threshold_fpr"]),
                       st.none() | st.integers() | st.floats() | st.text(max_size=30) | st.lists(st.integers())
                       | st.dictionaries(st.text(max_size=5), st.text(max_size=5) | st.integers()), max_size=9))
def test_any_json_is_an_alert_or_an_alert_error_and_a_valid_one_files(anything: Any, fields: dict[str, Any]) -> None:
    book = IncidentBook(gap_ms=60_000)
    for raw in (anything, {**doc(0, T0), **fields}):
        try:
            alert = parse_alert(json.dumps(raw).encode(), T0)
        except AlertError:
            continue
        filing = book.add(alert)
        assert filing.filed == 1
        record = json.dumps([inc.to_dict() for inc in filing.changed])
        assert len(record) < 100_000


def test_priority_ranks_a_short_abnormal_burst_above_a_noisy_normal_service_where_a_sum_of_severities_does_not(
) -> None:
    """The case the README's comparison turns on: a normal service that crosses the line all day (1,000 alerts
    over ten hours, just over the threshold) and a burst of five connections rarer than anything in calibration.
    A sum of severities puts the noise first; the priority puts the burst first."""
    book = IncidentBook(gap_ms=600_000)
    for i in range(1_000):
        book.add(alert_from_doc(doc(i, T0 + i * 36_000, service="noisy", severity=1.2, rank=0.9905), 0))
    for i in range(5):
        book.add(alert_from_doc(doc(10_000 + i, T0 + i * 1_000, service="burst", severity=4.0, rank=1.0,
                                    label="back."), 0))
    noisy = max((inc for inc in book.incidents.values() if inc.signature[1] == "noisy"), key=lambda i: i.alerts)
    [burst] = [inc for inc in book.incidents.values() if inc.signature[1] == "burst"]
    assert noisy.severity_sum > burst.severity_sum
    assert burst.priority > noisy.priority


def test_one_far_future_timestamp_cannot_close_every_open_incident() -> None:
    from incidents.alert_input import clamp_future

    book = IncidentBook(gap_ms=300_000)
    now = T0 + HOUR_MS
    for i in range(5):
        book.add(alert_from_doc(doc(i, now - 1_000 + i, service=f"s{i}"), 0))
    forged, clamped = clamp_future(alert_from_doc(doc(99, now + 24 * HOUR_MS, service="x"), 0), now, 300_000)
    assert clamped and forged.event_ms == now
    book.add(forged)
    assert book.close_quiet() == [] and len(book.open) == 6
    honest, clamped = clamp_future(alert_from_doc(doc(100, now + 60_000), 0), now, 300_000)
    assert not clamped and honest.event_ms == now + 60_000


def test_a_flood_of_random_signatures_keeps_the_book_bounded() -> None:
    from incidents.book import Limits

    book = IncidentBook(gap_ms=300_000, limits=Limits(max_open=50, max_incidents=120))
    crowded, pruned = 0, 0
    for i in range(2_000):
        filing = book.add(alert_from_doc(doc(i, T0 + i, service=f"random-{i}"), 0))
        crowded += filing.crowded_out
        if i % 100 == 99:
            pruned += len(book.prune())
            assert len(book.incidents) <= 120
        assert len(book.open) <= 50
    assert crowded == 2_000 - 50 and pruned >= 2_000 - 120
    # the least recently updated incident is the one closed: a busy signature stays open
    busy = IncidentBook(gap_ms=300_000, limits=Limits(max_open=3))
    for i in range(20):
        busy.add(alert_from_doc(doc(i, T0 + 2 * i, service="busy"), 0))
        busy.add(alert_from_doc(doc(100 + i, T0 + 2 * i + 1, service=f"new-{i}"), 0))
    assert any(sig[1] == "busy" for sig in busy.open)


_json = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                     | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=5), max_leaves=20)


def _good_rule_record() -> dict[str, Any]:
    from incidents import state

    book = IncidentBook(gap_ms=300_000)
    book.add(alert_from_doc(doc(0, T0), 0))
    first = next(iter(book.incidents))
    book.mark_benign(VerdictDoc(first, T0 + HOUR_MS, T0, "ann", "why"))
    book.add(alert_from_doc(doc(1, T0 + 5), 0))  # held
    return json.loads(state.rule_record(book, first)[1] or b"")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["verdict_id", "kind", "max_severity", "until_ms", "allowance", "decided_ms", "analyst",
                        "note", "window_start", "seen", "broken", "held", "suppressed", "broke_through", "line",
                        "pages", "minute", "filed"]), _json)
def test_a_forged_state_record_is_refused_at_restore_or_works_afterwards(field: str, value: Any) -> None:
    """Any one field of a rule or budget record replaced by any JSON value (1e400, NaN, lists, strings...): the
    restore refuses it with an error the service skips and counts, or the restored book files alerts as usual.
    Never an OverflowError at start, never a crash later inside the loop."""
    from incidents import state
    from incidents.state import BAD_STATE

    rule = _good_rule_record()
    budget = {"schema": state.STATE_SCHEMA, "type": "budget",
              "budget": {"line": 2.0, "pages": [T0], "minute": 1, "filed": 3}}
    for record in (rule, budget):
        body = record["rule"] if record["type"] == "rule" else record["budget"]
        if field not in body:
            continue
        body[field] = value
        book = IncidentBook(gap_ms=300_000)
        try:
            state.apply(book, json.dumps(record).encode())
        except BAD_STATE:
            continue
        for i in range(30):  # the kind of the rule, then time moves on: holds, breaks, settles
            book.add(alert_from_doc(doc(10 + i, T0 + 10 + i * 1_000), 0))
        book.stream_ms = T0 + 2 * HOUR_MS
        book.settle_rules()


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["first_seen_ms", "last_seen_ms", "alerts", "minute", "peak_per_min", "priority", "triage",
                        "signature", "kind", "features", "labels", "sample", "rarity", "status"]), _json)
def test_a_forged_incident_record_is_refused_at_restore_or_restores(field: str, value: Any) -> None:
    from incidents.book import Incident
    from incidents.state import BAD_STATE

    book = IncidentBook(gap_ms=300_000)
    book.add(alert_from_doc(doc(0, T0), 0))
    record = next(iter(book.incidents.values())).to_dict()
    record[field] = value
    try:
        incident = Incident.from_dict(json.loads(json.dumps(record)))
    except BAD_STATE:
        return
    json.dumps(incident.to_dict())  # what the service writes back stays JSON


@pytest.mark.hostile
def test_an_attacker_who_spends_the_budget_cannot_silence_a_far_stronger_flood() -> None:
    """Issue 31 item 12: 20 small bursts (240 connections) spent the hour's pages, and a 1,000-alert flood then
    went to review. The flood escalates from the reserve; the bursts never reach the reserve themselves."""
    book = IncidentBook(gap_ms=60_000, budget=Budget(per_hour=20, floor=2.0))
    i = 0
    for burst in range(20):
        for j in range(12):
            book.add(alert_from_doc(doc(i, T0 + burst * 1000 + j, service=f"b{burst}", rank=1.0, label="x."), 0))
            i += 1
    bursts = [inc for inc in book.incidents.values() if inc.triage == PAGE]
    assert len(bursts) == 20 and book.budget.pages_in_hour(book.stream_ms) == 20
    more = [book.add(alert_from_doc(doc(i + k, T0 + 30_000 + k, service=f"late{k}", rank=1.0), 0)).changed[-1]
            for k in range(12)]
    assert not [inc for inc in more if inc.triage == PAGE]  # as strong as the bursts: no escalation
    for k in range(1000):
        flood = book.add(alert_from_doc(doc(10_000 + k, T0 + 40_000 + k * 10, service="flood", rank=1.0), 0))
    inc = flood.changed[-1]
    assert inc.triage == PAGE and "escalated" in inc.triage_reason
    assert book.budget.pages_in_hour(book.stream_ms) <= 20 + book.budget.reserve
