"""The shared record reader and schema (core): KDD99 as data, both file variants, errors naming file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import records
from core.schema import RecordSchema, kdd99

KDD99 = kdd99()

GOOD = (
    "0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,"
    "0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal."
)
ATTACK = GOOD.replace("normal.", "smurf.").replace(",http,", ",ecr_i,")


def write(path: Path, lines: list[str], gz: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_schema_has_41_features_with_three_categoricals() -> None:
    assert len(KDD99.names) == 41
    assert KDD99.categorical == ("protocol_type", "service", "flag")
    assert len(KDD99.numeric) == 38
    assert KDD99.names[0] == "duration" and KDD99.names[-1] == "dst_host_srv_rerror_rate"
    assert RecordSchema.load("nsl_kdd").names == KDD99.names


def test_schema_round_trips_through_its_file(tmp_path: Path) -> None:
    KDD99.save(tmp_path / "s.json")
    again = RecordSchema.load(tmp_path / "s.json")
    assert again == KDD99
    assert dict(zip(again.numeric, again.bounds()[1], strict=True))["serror_rate"] == 1.0
    assert again.log_scaled == KDD99.log_scaled and sum(again.log_scaled) == 18


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip_from_any_path(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / "any-name.dat", [GOOD, ATTACK, GOOD], gz=gz)
    data = records.read_records(path)
    assert len(data) == 3 and data.n_fields == 42
    assert list(data.labels) == ["normal", "smurf", "normal"]
    assert data.is_attack.tolist() == [False, True, False]
    assert list(data.families()) == ["normal", "dos", "normal"]
    assert data.features["src_bytes"].tolist() == [181.0, 181.0, 181.0]
    assert data.features["service"].tolist() == ["http", "ecr_i", "http"]
    assert data.record_ids.tolist() == [0, 1, 2]


def test_reads_nsl_kdd_variant(tmp_path: Path) -> None:
    nsl = [GOOD.replace("normal.", "normal,21"), ATTACK.replace("smurf.", "mscan,15")]
    data = records.read_records(write(tmp_path / "KDDTest+.txt", nsl))
    assert data.n_fields == 43
    assert list(data.labels) == ["normal", "mscan"]
    assert list(data.families()) == ["normal", "probe"]


def test_unknown_attack_name_is_family_unknown() -> None:
    assert KDD99.family("zeroday") == "unknown"
    assert KDD99.normalize_label(" Neptune. ") == "neptune"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (GOOD.replace(",181,", ",abc,"), "non-numeric or NaN value in field src_bytes"),
        (GOOD.replace(",181,", ",-5,"), "negative value in field src_bytes"),
        (GOOD.replace(",181,", ",inf,"), "infinite value in field src_bytes"),
        (GOOD.replace(",181,", ",nan,"), "non-numeric or NaN value in field src_bytes"),
        (GOOD.replace(",181,", ","), "expected 42 comma-separated fields, found 41"),
        (GOOD.replace(",tcp,", ",,"), "empty categorical field protocol_type"),
        (GOOD.replace("normal.", ""), "missing or malformed label"),
        ("   ", "empty line"),
        (GOOD.replace(";", ",").replace(",", ";"), "expected 42 comma-separated fields, found 1"),
    ],
)
def test_bad_line_error_names_file_line_and_reason(tmp_path: Path, bad: str, reason: str) -> None:
    path = write(tmp_path / "bad.csv", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(records.RecordFormatError) as err:
        records.read_records(path)
    assert str(err.value) == f"{path}, line 3: {reason}"


def test_non_strict_collects_rejections_and_keeps_positions(tmp_path: Path) -> None:
    lines = [GOOD, GOOD.replace(",181,", ",x,"), ATTACK, '"quoted,' + GOOD, GOOD]
    path = tmp_path / "mixed.csv"
    raw = ("\n".join(lines) + "\n").encode() + b"\xff\xfe,broken\n" + (GOOD + "\n").encode()
    path.write_bytes(raw)
    data = records.read_records(path, strict=False, keep_raw=True)
    assert data.lines.tolist() == [1, 3, 5, 7]
    assert [r.line for r in data.rejected] == [2, 4, 6]
    assert data.rejected[2].reason == "not valid UTF-8"
    assert data.raw is not None and data.raw[1] == ATTACK
    assert data.payload(data.raw[1]) == ATTACK.rsplit(",", 1)[0]


def test_missing_file_names_path_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(records.RecordFormatError, match=r"does not exist; pass --data PATH or set KDD_DATA"):
        records.read_records(tmp_path / "nope.gz")


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    full = gzip.compress(("\n".join([GOOD] * 2000) + "\n").encode())
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(records.RecordFormatError, match="truncated"):
        records.read_records(path)


def test_default_path_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDD_DATA", str(tmp_path / "x.gz"))
    assert records.default_data_path() == tmp_path / "x.gz"


def test_typed_fields_is_vectorised_over_strings() -> None:
    rows = [GOOD.rsplit(",", 1)[0].split(","), GOOD.replace(",0.11,", ",inf,").rsplit(",", 1)[0].split(",")]
    numeric, cats, reasons = records.typed_fields(KDD99, pd.DataFrame(rows))
    assert reasons[0] is None
    assert reasons[1] == "infinite value in field dst_host_same_src_port_rate"
    assert numeric.shape == (2, 38) and np.isfinite(numeric[0]).all() and len(cats) == 3


def test_shared_file_reads_whole(kdd_path: Path) -> None:
    """The real 10% file: 494,021 rows, 97,278 normal, 23 classes, as its README says."""
    data = records.read_records(kdd_path)
    assert len(data) == 494_021 and not data.rejected
    assert int((data.labels == "normal").sum()) == 97_278
    assert data.labels.nunique() == 23
    assert set(data.features["protocol_type"]) == {"tcp", "udp", "icmp"}


@pytest.mark.hostile
def test_a_line_with_a_huge_field_is_malformed_not_sent(tmp_path: Path) -> None:
    """Issue 31 item 18: a data line holding a 2 MB field killed the producer with a traceback (the broker refused
    the message). Any line past the limit is a rejection with a reason, whatever field made it long."""
    huge = GOOD.replace(",http,", "," + "x" * 2_000_000 + ",")
    path = write(tmp_path / "huge.csv", [GOOD, huge, ATTACK])
    data = records.read_records(path, strict=False)
    assert data.lines.tolist() == [1, 3] and [r.line for r in data.rejected] == [2]
    assert "longer than the 65536-character limit" in data.rejected[0].reason
    with pytest.raises(records.RecordFormatError, match="line 2: line longer"):
        records.read_records(path)
