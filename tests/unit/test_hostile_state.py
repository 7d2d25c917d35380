"""Issue 31, the pure mechanisms: text that never fails to encode, times in one range, outputs bounded by one rule,
and incident state that cannot lie (idle closes published, stale copies dropped, ids unique, stream time from
the data, a forged future stamp bounded). Each test attacks the mechanism, not one shape of input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import jsondoc, timebounds
from incidents import state
from incidents.alert_input import AlertError, alert_from_doc, clamp_future, parse_alert
from incidents.book import CLOSED, Incident, IncidentBook, Limits
from incidents.settings import IncidentSettings
from incidents.verdicts import VerdictDoc, VerdictError
from tests.unit.test_triage import T0, doc

pytestmark = pytest.mark.hostile

SURROGATES = ['"\\ud800"', '"a\\udfffb"', '"\\ud83d"']


# ------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize("raw", SURROGATES)
def test_lone_surrogates_are_replaced_wherever_they_are_read(raw: str) -> None:
    doc_ = jsondoc.loads(f'{{{raw}: [{raw}, {{"k": {raw}}}]}}'.encode())
    encoded = json.dumps(doc_, ensure_ascii=False).encode("utf-8")  # would raise UnicodeEncodeError before
    assert "\ufffd" in encoded.decode()
    assert jsondoc.loads(b'"\xed\xa0\x80"') == "\ufffd\ufffd\ufffd"  # raw surrogate bytes


@pytest.mark.parametrize("raw", SURROGATES)
def test_a_surrogate_alert_files_and_its_incident_encodes(raw: str) -> None:
    base = json.dumps(doc(1, T0)).replace('"ecr_i"', raw).replace('"normal."', raw).replace('"1"', raw, 1)
    alert = parse_alert(base.encode(), T0)
    book = IncidentBook(gap_ms=300_000)
    filing = book.add(alert)  # the signature hash encoded the category: UnicodeEncodeError before
    record = state.encode(filing.changed[0].to_dict())
    assert "\ufffd" in json.loads(record)["sample"][0]["record_id"]
    assert "\ufffd" in jsondoc.key_bytes(alert.record_id).decode()


def test_nested_json_is_a_value_error_not_a_recursion_error() -> None:
    with pytest.raises(ValueError, match="nested"):
        jsondoc.loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(VerdictError):
        VerdictDoc.parse(jsondoc.loads(b'{"incident_id": "x", "verdict": "benign", "until_ms": [[[[1]]]]}'))


# ------------------------------------------------------------------------------------------ time
@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1969-12-31T23:59:59Z",
                                  "2100-01-01T00:00:00Z", "+002000-01-01", "nonsense", "2020-13-01"])
def test_event_times_outside_the_range_are_dead_letters_with_a_reason(text: str) -> None:
    with pytest.raises(AlertError, match="event_time") as info:
        alert_from_doc(doc(1, T0) | {"event_time": text}, T0)
    assert info.value.reason == "bad_field"


@pytest.mark.parametrize("fallback", [-1, 2**62, timebounds.MAX_MS])
def test_a_kafka_timestamp_outside_the_range_is_refused_too(fallback: int) -> None:
    with pytest.raises(AlertError, match="Kafka timestamp"):
        alert_from_doc({k: v for k, v in doc(1, T0).items() if k != "event_time"}, fallback)


@given(st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=300, deadline=None)
def test_check_ms_accepts_exactly_the_range(value: float) -> None:
    inside = isinstance(value, int | float) and value == value and timebounds.MIN_MS <= value < timebounds.MAX_MS
    if inside:
        assert timebounds.check_ms(value, "t") == int(value) and timebounds.iso(value) is not None
    else:
        with pytest.raises(timebounds.TimeRangeError, match="t must"):
            timebounds.check_ms(value, "t")
        assert timebounds.iso(value) is None


def test_a_verdict_stamped_in_a_far_year_is_refused_and_its_length_counts_from_stream_time() -> None:
    with pytest.raises(VerdictError, match="decided_ms"):
        VerdictDoc.parse({"incident_id": "i", "verdict": "benign", "until_ms": T0, "decided_ms": 253_402_300_799_000})
    book = IncidentBook(gap_ms=300_000, limits=Limits(max_verdict_ms=86_400_000))
    inc = book.add(alert_from_doc(doc(1, T0), 0)).changed[0]
    late_2099 = 4_070_908_800_000
    outcome, rule = book.mark_benign(VerdictDoc(inc.incident_id, late_2099, late_2099, "mallory", ""))
    assert outcome == "applied" and rule is not None
    assert rule.until_ms == T0 + 86_400_000  # a day of stream time, not until 2099


# ------------------------------------------------------------------------------------------ outputs
huge = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5000),
                    lambda kids: st.lists(kids, max_size=40)
                    | st.dictionaries(st.text(max_size=300), kids, max_size=40),
                    max_leaves=400)


@given(huge)
@settings(max_examples=200, deadline=None)
def test_every_output_is_bounded_by_one_rule(value: Any) -> None:
    out = jsondoc.dumps({"any": value, "schema": "s" * 2_000_000, "n": 10**4000}, max_chars=64 * 1024)
    assert len(out) < 64 * 1024 + 64 * 1024  # budget plus structure (brackets, separators)
    back = json.loads(out)
    assert len(back["schema"]) <= jsondoc.MAX_TEXT and abs(back["n"]) <= jsondoc.INT_LIMIT


def test_a_held_alert_with_huge_fields_still_gives_a_small_state_record() -> None:
    book = IncidentBook(gap_ms=300_000)
    inc = book.add(alert_from_doc(doc(1, T0), 0)).changed[0]
    book.mark_benign(VerdictDoc(inc.incident_id, T0 + 10**9, T0, "ann", ""))
    hostile = doc(2, T0 + 1_000) | {"schema": "x" * 900_000, "model_version": "v" * 900_000}
    filing = book.add(alert_from_doc(hostile, 0))
    assert filing.held
    key, value = state.rule_record(book, inc.incident_id)
    assert value is not None and len(value) < 64 * 1024


# ------------------------------------------------------------------------------------------ incident state
def _records(book: IncidentBook) -> list[dict[str, Any]]:
    return [inc.to_dict() for inc in book.incidents.values()]


def test_an_idle_close_is_returned_for_publishing_and_leaves_stream_time_alone() -> None:
    book = IncidentBook(gap_ms=300_000)
    inc = book.add(alert_from_doc(doc(1, T0), 0)).changed[0]
    assert book.close_idle(T0 + 300_000 + 60_000, lateness_ms=300_000) == []  # within gap + lateness
    closed = book.close_idle(T0 + 700_000, lateness_ms=300_000)
    assert closed == [inc] and inc.status == CLOSED and book.stream_ms == T0


def test_alerts_that_arrive_after_an_idle_spell_are_not_closed_at_once() -> None:
    """Issue 31 item 10: a service that idled (topic not there yet, detector lag) used to move stream time to the
    wall clock, so every late alert became an incident opened and closed in one batch."""
    book = IncidentBook(gap_ms=300_000)
    assert book.close_idle(T0 + 3_600_000, lateness_ms=300_000) == []  # idle for an hour: nothing to close
    filings = [book.add(alert_from_doc(doc(i, T0 + i * 1000), 0)) for i in range(286)]
    assert not book.close_quiet() and len(book.open) == 1
    assert sum(f.late for f in filings) == 0 and next(iter(book.open.values())).alerts == 286


def test_a_late_alert_is_counted_and_filed_never_dropped() -> None:
    book = IncidentBook(gap_ms=60_000)
    book.add(alert_from_doc(doc(1, T0 + 3_600_000, service="http"), 0))
    filing = book.add(alert_from_doc(doc(2, T0), 0))
    assert filing.late == 1 and filing.filed == 1


def test_restore_drops_stale_open_copies_and_applies_tombstones() -> None:
    """Issue 31 item 8: a compacted topic can hold an incident open, then closed (resolved by a verdict)."""
    book = IncidentBook(gap_ms=300_000)
    first = [book.add(alert_from_doc(doc(i, T0 + i, service=f"s{i}"), 0)).changed[0].to_dict() for i in range(4)]
    target = first[0]["incident_id"]
    book.mark_benign(VerdictDoc(target, T0 + 10**9, T0, "ann", ""))
    gone = first[1]["incident_id"]
    log = [*first, book.incidents[target].to_dict()]

    class M:
        def __init__(self, key: str, value: bytes | None) -> None:
            self.k, self.v = key, value

        def key(self) -> bytes:
            return self.k.encode()

        def value(self) -> bytes | None:
            return self.v

    restored = IncidentBook(gap_ms=300_000)
    incidents = [M(d["incident_id"], json.dumps(d).encode()) for d in log] + [M(gone, None)]
    rules = [M(*state.rule_record(book, target)), M(*state.rule_record(book, "expired"))]
    rules.append(M("rule:expired", None))
    state.restore(restored, "inc", incidents, "st", rules, lambda *a: pytest.fail(f"bad record {a}"))
    assert restored.incidents[target].status == CLOSED and target not in {i.incident_id for i in restored.open.values()}
    assert gone not in restored.incidents and len(restored.open) == 2
    assert set(restored.rules) == {target}
    follow = restored.add(alert_from_doc(doc(9, T0 + 10, service="s0"), 0))  # milder, within the rate: held
    assert follow.held or all(c.incident_id != target for c in follow.changed)


@pytest.mark.parametrize("attack", ["same_first_timestamp", "back_dated"])
def test_incident_ids_are_unique_by_construction(attack: str) -> None:
    """Issue 31 item 9: an alert reusing an incident's first timestamp, after that incident closed, recreated its
    id and overwrote a paged 10-alert incident on the compacted topic with a 1-alert record."""
    book = IncidentBook(gap_ms=60_000)
    for i in range(10):
        book.add(alert_from_doc(doc(i, T0 + i * 1000), 0))
    first = next(iter(book.incidents.values()))
    book.add(alert_from_doc(doc(99, T0 + 3_600_000, service="other"), 0))
    book.close_quiet()
    assert first.status == CLOSED
    when = T0 if attack == "same_first_timestamp" else T0 - 1
    again = book.add(alert_from_doc(doc(100, when), 0)).changed[-1]
    assert again is not first and again.incident_id != first.incident_id
    assert book.incidents[first.incident_id].alerts == 10
    if attack == "back_dated":  # a back-dated alert joining an open incident moves its first_seen back
        latest = book.add(alert_from_doc(doc(101, T0 + 3_600_000 - 5_000, service="other"), 0)).changed[-1]
        assert latest.first_seen_ms == T0 + 3_600_000 - 5_000


def test_ids_collide_with_no_restored_or_pruned_state() -> None:
    book = IncidentBook(gap_ms=1)
    created = {}
    for i in range(30):  # the same signature and first timestamp, 30 times over
        created |= {id(c): c for c in book.add(alert_from_doc(doc(i, T0), 0)).changed}
        book.add(alert_from_doc(doc(1000 + i, T0 + 10, service="clock"), 0))
        book.close_quiet()
    assert len(created) == 30 and len({c.incident_id for c in created.values()}) == len(created)
    assert len(book.incidents) == len(created) + 1  # none overwrote another (one more: the clock's)


def test_a_forged_future_stamp_moves_stream_time_by_at_most_a_tenth_of_the_gap() -> None:
    """Issue 31 item 11: the skew (300 s) equalled the gap (300 s), so one alert stamped now+299 s closed every
    open incident. The skew in force is at most a tenth of the gap, whatever is set."""
    s = IncidentSettings(alert_topic="a", gap_s=300, max_future_skew_s=300)
    assert s.future_skew_ms == 30_000
    now = T0 + 10 * 60_000
    book = IncidentBook(gap_ms=300_000)
    victims = [book.add(alert_from_doc(doc(i, now - 120_000, service=f"s{i}"), 0)).changed[0] for i in range(20)]
    forged, clamped = clamp_future(alert_from_doc(doc(99, now + 299_000, service="x"), 0), now, s.future_skew_ms)
    assert clamped and forged.event_ms == now
    book.add(forged)
    assert not book.close_quiet() and all(v.status != CLOSED for v in victims)


def test_incident_from_dict_refuses_what_to_dict_never_writes() -> None:
    book = IncidentBook(gap_ms=300_000)
    rec = book.add(alert_from_doc(doc(1, T0), 0)).changed[0].to_dict()
    assert Incident.from_dict(jsondoc.loads(state.encode(rec))).to_dict() == rec


def test_a_revoked_verdict_ends_now_files_what_it_held_and_keeps_an_audit() -> None:
    """Issue 31 item 14: a verdict could only be revoked by letting it expire."""
    book = IncidentBook(gap_ms=300_000)
    inc = book.add(alert_from_doc(doc(1, T0), 0)).changed[0]
    assert book.mark_benign(VerdictDoc(inc.incident_id, T0 + 10**9, T0, "ann", "lab"))[0] == "applied"
    held = book.add(alert_from_doc(doc(2, T0 + 1000), 0))
    assert held.held and held.filed == 0
    outcome, filing = book.revoke(VerdictDoc(inc.incident_id, 0, T0 + 2000, "bob", "it was an attack", "revoke"))
    assert outcome == "revoked" and filing.filed == 1 and inc.incident_id not in book.rules
    assert inc.resolution is not None and inc.resolution["revoked"]["analyst"] == "bob"
    after = book.add(alert_from_doc(doc(3, T0 + 3000), 0))
    assert after.filed == 1 and not after.held  # no longer muted
    assert book.revoke(VerdictDoc(inc.incident_id, 0, T0, "bob", "", "revoke"))[0] == "not_in_force"
    assert VerdictDoc.parse({"incident_id": "x", "verdict": "revoke"}).until_ms == 0  # no duration needed


def test_grouping_by_source_makes_one_scanner_one_incident_that_counts_its_targets() -> None:
    """Issue 30 item 4: "10.0.0.5 is scanning 400 hosts": one incident per originating host and kind, with the
    number of distinct hosts it touched (exact to 64, then a k-minimum-values estimate)."""
    from incidents.book import distinct_count

    book = IncidentBook(gap_ms=300_000, limits=Limits(group_by="source"))
    for i in range(400):
        conn = {"uid": f"C{i}", "orig_h": "10.0.0.5", "orig_p": 40000 + i, "resp_h": f"192.168.{i // 250}.{i % 250}",
                "resp_p": 22, "community_id": None}
        book.add(alert_from_doc(doc(i, T0 + i * 10, severity=1.5 + (i % 7) * 3) | {"conn": conn}, 0))
    book.add(alert_from_doc(doc(999, T0, service="other"), 0))  # no connection: grouped by signature as before
    [scan] = [inc for inc in book.incidents.values() if inc.signature[0] == "source 10.0.0.5"]
    assert scan.alerts == 400 and scan.sources == {"10.0.0.5": 400}
    assert 0.75 * 400 <= distinct_count(scan.dest_sketch) <= 1.25 * 400
    record = scan.to_dict()
    assert Incident.from_dict(jsondoc.loads(state.encode(record))).to_dict() == record


def test_pyslots_reads_a_tuple_slot_without_touching_it() -> None:
    from core import pyslots

    assert pyslots.layout_known()  # CPython, as the project runs
    assert not pyslots.tuple_slot_is_null(("a", "b"), 0) and not pyslots.tuple_slot_is_null(["a"], 0)
    pyslots.clear_pending_error()  # nothing pending: a no-op
