"""The shared KDD99 reader: schema, both file variants, and errors that name the file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training import kdd99

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
    assert len(kdd99.FEATURES) == 41
    assert kdd99.CATEGORICAL == ("protocol_type", "service", "flag")
    assert len(kdd99.NUMERIC) == 38
    assert kdd99.FEATURES[0] == "duration" and kdd99.FEATURES[-1] == "dst_host_srv_rerror_rate"


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip_from_any_path(tmp_path: Path, gz: bool) -> None:
    path = write(tmp_path / "any-name.dat", [GOOD, ATTACK, GOOD], gz=gz)
    data = kdd99.read_kdd(path)
    assert len(data) == 3 and data.variant == kdd99.KDD99
    assert list(data.labels) == ["normal", "smurf", "normal"]
    assert data.is_attack.tolist() == [False, True, False]
    assert list(data.families()) == ["normal", "dos", "normal"]
    assert data.features["src_bytes"].tolist() == [181.0, 181.0, 181.0]
    assert data.features["service"].tolist() == ["http", "ecr_i", "http"]
    assert data.record_ids.tolist() == [0, 1, 2]


def test_reads_nsl_kdd_variant(tmp_path: Path) -> None:
    nsl = [GOOD.replace("normal.", "normal,21"), ATTACK.replace("smurf.", "mscan,15")]
    data = kdd99.read_kdd(write(tmp_path / "KDDTest+.txt", nsl))
    assert data.variant == kdd99.NSL_KDD
    assert list(data.labels) == ["normal", "mscan"]
    assert list(data.families()) == ["normal", "probe"]


def test_unknown_attack_name_is_family_unknown() -> None:
    assert kdd99.attack_family("zeroday") == "unknown"
    assert kdd99.normalize_label(" Neptune. ") == "neptune"


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
    with pytest.raises(kdd99.KddFormatError) as err:
        kdd99.read_kdd(path)
    assert str(err.value) == f"{path}, line 3: {reason}"


def test_non_strict_collects_rejections_and_keeps_positions(tmp_path: Path) -> None:
    lines = [GOOD, GOOD.replace(",181,", ",x,"), ATTACK, '"quoted,' + GOOD, GOOD]
    path = tmp_path / "mixed.csv"
    raw = ("\n".join(lines) + "\n").encode() + b"\xff\xfe,broken\n" + (GOOD + "\n").encode()
    path.write_bytes(raw)
    data = kdd99.read_kdd(path, strict=False, keep_raw=True)
    assert data.lines.tolist() == [1, 3, 5, 7]
    assert [r.line for r in data.rejected] == [2, 4, 6]
    assert data.rejected[2].reason == "not valid UTF-8"
    assert data.raw is not None and data.raw[1] == ATTACK
    assert kdd99.strip_label(data.raw[1], data.variant) == ATTACK.rsplit(",", 1)[0]


def test_missing_file_names_path_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(kdd99.KddFormatError, match=r"does not exist; pass --data PATH or set KDD_DATA"):
        kdd99.read_kdd(tmp_path / "nope.gz")


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    full = gzip.compress(("\n".join([GOOD] * 2000) + "\n").encode())
    path = tmp_path / "cut.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(kdd99.KddFormatError, match="truncated"):
        kdd99.read_kdd(path)


def test_default_path_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDD_DATA", str(tmp_path / "x.gz"))
    assert kdd99.default_data_path() == tmp_path / "x.gz"


def test_validate_fields_is_vectorised_over_strings() -> None:
    rows = [GOOD.rsplit(",", 1)[0].split(","), GOOD.replace(",0.11,", ",inf,").rsplit(",", 1)[0].split(",")]
    feats, reasons = kdd99.validate_fields(pd.DataFrame(rows))
    assert reasons[0] is None
    assert reasons[1] == "infinite value in field dst_host_same_src_port_rate"
    assert feats.shape == (2, 41) and np.isfinite(feats.loc[0, list(kdd99.NUMERIC)].astype(float)).all()


def test_shared_file_reads_whole(kdd_path: Path) -> None:
    """The real 10% file: 494,021 rows, 97,278 normal, 23 classes, as its README says."""
    data = kdd99.read_kdd(kdd_path)
    assert len(data) == 494_021 and not data.rejected
    assert int((data.labels == "normal").sum()) == 97_278
    assert data.labels.nunique() == 23
    assert set(data.features["protocol_type"]) == {"tcp", "udp", "icmp"}
