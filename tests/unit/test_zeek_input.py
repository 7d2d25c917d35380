"""Zeek conn.log input (issue 30, part 1): every shape Zeek and its shippers write reads into the same connection,
every fixture record parses, and anything else is a ZeekError with a reason (never another exception)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import zeek
from core.zeek_log import log_lines, read_conns

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zeek"
FILES = sorted(p for p in FIXTURES.iterdir() if ".log" in p.name)
LABELLED = FIXTURES / "ctu-normal-40-day1.conn.log.labeled"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_fixture_record_parses_with_no_dead_letter(path: Path) -> None:
    conns, bad = read_conns(path)
    assert bad == [] and len(conns) >= 120
    assert all(c.proto in zeek.PROTOS and 0 <= c.orig_p <= 65_535 for c in conns)


def test_the_iot23_layout_reads_as_the_tab_separated_labels() -> None:
    iot, _ = read_conns(FIXTURES / "iot23-layout.conn.log.labeled")
    tsv, _ = read_conns(LABELLED)
    assert iot == tsv[: len(iot)] and {"Benign", "Malicious"} <= {c.label for c in iot}


def shapes(line: zeek.LogLine) -> dict[str, tuple[str, tuple[str, ...] | None]]:
    """The same connection in every shape a topic can carry it in."""
    conn = zeek.parse_line(line.text, line.fields)
    flat = zeek.to_json_line(conn)
    doc = json.loads(flat)
    with_nulls = {**{k: None for k in ("service", "duration", "history", "community_id")}, **doc}
    nested = {k: v for k, v in doc.items() if not k.startswith("id.")}
    nested["id"] = {k[3:]: v for k, v in doc.items() if k.startswith("id.")}
    return {"tsv": (line.text, line.fields), "json": (flat, None),
            "json_with_nulls": (json.dumps(with_nulls), None), "json_nested_id": (json.dumps(nested), None),
            "zeek_kafka_envelope": (json.dumps({"conn": doc}), None),
            "message_envelope_tsv": (json.dumps({"message": line.text}), line.fields),
            "message_envelope_json": (json.dumps({"message": flat}), None)}


def test_the_same_records_in_every_shape_are_the_same_connection() -> None:
    lines = list(log_lines(LABELLED))
    for line in lines:
        want = zeek.parse_line(line.text, line.fields)
        for shape, (text, fields) in shapes(line).items():
            got = zeek.parse_value(text.encode(), fields)
            assert got == want, shape
    unset = [line for line in lines if "\t-\t" in line.text]
    assert unset, "the fixture holds unset fields"


def test_fields_are_read_by_name_whatever_their_order_and_appended_columns() -> None:
    line = next(iter(log_lines(LABELLED)))
    want = zeek.parse_line(line.text, line.fields)
    assert line.fields is not None
    values = dict(zip(line.fields, line.text.split("\t"), strict=True))
    values |= {"ip_proto": "6", "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg="}
    order = sorted(values)  # another order, with newer Zeek's columns
    got = zeek.parse_tsv("\t".join(values[k] for k in order), order)
    assert got == dataclasses.replace(want, community_id="1:LQU9qZlK+B5F3KDmev6m5PMibrg=")


@pytest.mark.parametrize("ts", [1655071198.444, 1655071198444, "2022-06-12T21:59:58.444+00:00",
                                "2022-06-12T21:59:58.444Z", "1655071198.444"])
def test_ts_in_seconds_milliseconds_or_iso_is_the_same_time(ts: object) -> None:
    base = {"uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 1, "id.resp_h": "10.0.0.2", "id.resp_p": 2,
            "proto": "tcp"}
    assert zeek.parse_doc(base | {"ts": ts}).ts == pytest.approx(1655071198.444, abs=1e-6)


def test_unset_and_empty_values() -> None:
    line = ("1596790164.509987\tCr01\t10.8.0.61\t35740\t8.8.8.8\t53\tudp\t-\t-\t-\t-\tS0\t-\t-\t0\t-\t1\t76\t0\t0"
            "\t(empty)")
    conn = zeek.parse_tsv(line)
    assert conn.service is None and conn.duration is None and conn.orig_bytes is None and conn.history is None
    assert zeek.parse_tsv(line.replace("\tudp\t-\t", "\tudp\t(empty)\t")).service == ""


BAD = {
    "port": ("id.resp_p", 70_000, "bad_field"),
    "address": ("id.orig_h", "10.0.0.300", "bad_field"),
    "proto": ("proto", "sctp", "bad_field"),
    "count": ("orig_bytes", -1, "bad_field"),
    "float_count": ("orig_bytes", 1.5, "bad_field"),
    "duration": ("duration", float("inf"), "bad_field"),
    "year_0": ("ts", "0001-01-01T00:00:00+14:00", "bad_time"),
    "far_future": ("ts", 5_000_000_000_000, "bad_time"),  # milliseconds: year 2128
    "negative_ts": ("ts", -5, "bad_time"),
    "no_uid": ("uid", None, "missing_field"),
    "bool_ts": ("ts", True, "bad_field"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_records_are_errors_with_a_reason_naming_the_field(case: str) -> None:
    field, value, reason = BAD[case]
    doc = {"ts": 1655071198.4, "uid": "C1", "id.orig_h": "10.0.0.1", "id.orig_p": 1, "id.resp_h": "10.0.0.2",
           "id.resp_p": 2, "proto": "tcp", field: value}
    with pytest.raises(zeek.ZeekError) as info:
        zeek.parse_doc(doc)
    assert info.value.reason == reason and (field.split(".")[-1] in str(info.value) or reason == "bad_time")


@pytest.mark.parametrize(("value", "reason"), [
    (b"", "empty"), (b"\xff\xfe", "not_utf8"), (b"#fields\tts", "header_line"), (b"1\t2\t3", "field_count"),
    (b"{not json", "invalid_json"), (b"[1, 2]", "not_an_object"), (b'"x"', "not_an_object"),
    (b'{"message": {"message": {"message": "x"}}}', "bad_envelope"), (b"x" * 70_000, "oversized"),
    (json.dumps({"message": json.dumps({"message": json.dumps({"message": "1"})})}).encode(), "bad_envelope"),
])
def test_bad_values_are_dead_letters_with_a_reason(value: bytes, reason: str) -> None:
    with pytest.raises(zeek.ZeekError) as info:
        zeek.parse_value(value)
    assert info.value.reason == reason, str(info.value)


@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_any_bytes_are_a_connection_or_a_zeek_error(value: bytes) -> None:
    try:
        zeek.parse_value(value)
    except zeek.ZeekError as exc:
        assert exc.reason and str(exc)


def test_iso_ts_round_trip_is_exact_to_the_millisecond() -> None:
    when = dt.datetime(2022, 6, 12, 21, 59, 58, 444000, tzinfo=dt.UTC)
    got = zeek._ts(when.isoformat())
    assert round(got * 1000) == round(when.timestamp() * 1000)
