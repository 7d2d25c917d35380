"""The detector's batch parser: every input is either a typed row or a rejection with a reason."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core import wire
from core.records import as_frame
from core.schema import kdd99

FEATURES = kdd99().names

GOOD = ("0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,"
        "0.00,0.11,0.00,0.00,0.00,0.00,0.00")


def accounted(values: list[bytes | None]) -> wire.ParsedBatch:
    batch = wire.Parser(kdd99()).parse(values)
    rejected = [r.index for r in batch.rejections]
    everything = sorted(batch.index.tolist() + rejected)
    assert everything == list(range(len(values))), "each input exactly once: parsed or rejected"
    assert len(batch.numeric) == len(batch.index) == len(batch.categories[0])
    assert all(r.code in wire.REASONS and r.detail for r in batch.rejections)
    return batch


def test_good_csv_and_json_parse_to_the_same_row() -> None:
    obj = dict(zip(FEATURES, GOOD.split(","), strict=True))
    batch = accounted([GOOD.encode(), json.dumps(obj).encode()])
    assert batch.rejections == []
    frame = as_frame(batch.schema, batch.numeric, batch.categories)
    a, b = frame.iloc[0], frame.iloc[1]
    assert a["src_bytes"] == b["src_bytes"] == 181.0 and a["service"] == b["service"] == "http"


def test_each_reason() -> None:
    fields = GOOD.split(",")
    cases = {
        b"": wire.EMPTY,
        b"   ": wire.EMPTY,
        b"1" * 20_000: wire.OVERSIZED,
        b"1,2": wire.FIELD_COUNT,
        GOOD.replace("181", "x").encode(): wire.INVALID_VALUE,
        GOOD.replace("181", "inf").encode(): wire.INVALID_VALUE,
        GOOD.replace("5450", "-1").encode(): wire.INVALID_VALUE,
        GOOD.replace("tcp", "\udcff", 1).encode("utf-8", "surrogateescape"): wire.NOT_UTF8,
        b"[1,2,3]": wire.FIELD_COUNT,
        b"{}": wire.INVALID_JSON,
        b'{"a": [1]': wire.INVALID_JSON,
        json.dumps(dict(zip(FEATURES, fields, strict=True)) | {"count": None}).encode(): wire.INVALID_JSON,
        json.dumps(dict(zip(FEATURES, fields, strict=True)) | {"count": "NaN"}).encode(): wire.INVALID_VALUE,
        (GOOD + "\n" + GOOD).encode(): wire.FIELD_COUNT,
    }
    values = [GOOD.encode(), *cases]
    batch = accounted(values)
    assert batch.index.tolist() == [0]
    got = {r.index: r.code for r in batch.rejections}
    for i, want in enumerate(cases.values(), start=1):
        assert got[i] == want, (values[i][:60], got[i], want)


def test_one_bad_value_does_not_reject_its_batch_mates() -> None:
    values = [GOOD.encode()] * 50 + [GOOD.replace("181", "oops").encode()] + [GOOD.encode()] * 50
    batch = accounted(values)
    assert len(batch.index) == 100 and [r.index for r in batch.rejections] == [50]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=30))
def test_random_bytes_are_always_accounted_for(values: list[bytes]) -> None:
    accounted(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(GOOD.split(",")) | st.text(max_size=12) | st.floats().map(str), min_size=38,
                max_size=44).map(lambda f: ",".join(f).encode("utf-8", "surrogatepass")))
def test_mangled_csv_rows_are_typed_or_rejected(value: bytes) -> None:
    batch = accounted([value, GOOD.encode()])
    if len(batch.index) == 2:
        numeric = batch.numeric
        assert np.isfinite(numeric).all() and (numeric >= 0).all()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FEATURES), st.none() | st.booleans() | st.integers() | st.floats()
                       | st.text(max_size=8) | st.lists(st.integers(), max_size=2), max_size=41))
def test_json_of_any_shape_is_accounted_for(obj: dict[str, object]) -> None:
    accounted([json.dumps(obj).encode()])


def test_trailing_line_breaks_and_whole_file_lines_are_records() -> None:
    """Other producers send lines as read (CRLF) or with the label; neither is a dead letter."""
    values = [(GOOD + "\r\n").encode(), (GOOD + "\n").encode(), (GOOD + ",normal.").encode(),
              (GOOD + ",smurf,21").encode(), (GOOD + ",a,b,c").encode(), (GOOD + "\r\n" + GOOD).encode()]
    batch = accounted(values)
    assert batch.index.tolist() == [0, 1, 2, 3] and batch.trimmed == 2
    assert {r.index: r.code for r in batch.rejections} == {4: wire.FIELD_COUNT, 5: wire.FIELD_COUNT}
    plain = wire.Parser(kdd99()).parse([GOOD.encode()])
    assert (batch.numeric == plain.numeric[0]).all()  # the same row each time: labels never reach scoring


def test_the_envelope_round_trips_and_reads_foreign_messages() -> None:
    """One codec for the producer, the detector, retraining and the test kit: key, value and headers."""
    key, value, hdrs = wire.encode(7, b"row", "smurf.")
    assert (key, value) == (b"7", b"row") and wire.record_id(hdrs, key) == "7" and wire.label(hdrs) == "smurf."
    key, _, hdrs = wire.encode("abc", b"row")
    assert wire.label(hdrs) is None and wire.record_id(hdrs, key) == "abc"
    assert wire.record_id(None, b"from-key") == "from-key"  # another producer: the key alone
    assert wire.record_id([], b"\xff\xfe") is None and wire.record_id(None, None) is None


def test_retraining_reads_exactly_what_the_detector_reads() -> None:
    """The three readers used to disagree (a CSV record carrying its label: scored by the detector, malformed to
    retraining). Now retraining's topic reader is the detector's parser."""
    from training.from_topic import _parse

    fields = GOOD.split(",")
    obj = json.dumps(dict(zip(kdd99().names, [float(f) if f.replace(".", "").isdigit() else f for f in fields],
                              strict=True))).encode()
    values = [GOOD.encode(), (GOOD + ",normal.").encode(), obj, b"garbage", b"", (GOOD + "\r\n").encode()]
    detector = wire.Parser(kdd99()).parse_safe(values)
    frame, positions = _parse(kdd99(), values)
    assert sorted(positions.tolist()) == sorted(detector.index.tolist()) == [0, 1, 2, 5]
    assert len(frame) == 4 and list(frame.columns) == list(kdd99().names)
