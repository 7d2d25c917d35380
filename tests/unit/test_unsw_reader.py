"""UNSW-NB15 as its files come (a header row, a byte-order mark, CRLF, an `id` column, `-` for no service, two
label columns), read by the schema file alone: the same rows whatever the column order, the label from
`attack_cat`, and KDD99 files read as before."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from core.records import RecordFormatError, read_records
from core.schema import RecordSchema

UNSW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "unsw_nb15_dev.csv.gz"


@pytest.fixture(scope="module")
def unsw_path() -> Path:
    if not UNSW.exists():
        pytest.fail(f"the shared UNSW-NB15 file is missing at {UNSW.resolve()}", pytrace=False)
    return UNSW


@pytest.fixture(scope="module")
def schema() -> RecordSchema:
    return RecordSchema.load("unsw_nb15")


def test_the_real_file_quirks(unsw_path: Path, schema: RecordSchema) -> None:
    raw = gzip.open(unsw_path, "rb").read(4000)
    assert raw.startswith(b"\xef\xbb\xbfid,") and b"\r\n" in raw  # what the reader has to cope with
    data = read_records(unsw_path, schema=schema, limit=2000, keep_raw=True)
    assert len(data) == 2000 and not data.rejected
    assert list(data.features.columns) == list(schema.names) and "id" not in data.features
    assert data.lines[0] == 2 and data.record_ids[0] == 1  # line 1 is the header
    assert set(data.features["service"]) >= {"-"}  # "no service" is a category, not an empty field
    assert not any(str(v).endswith("\r") for v in data.features.iloc[:, -1])
    assert set(data.labels) <= {"normal", *schema.label.families}  # attack_cat, lower-cased
    assert data.is_attack.sum() == (data.labels != "normal").sum()
    # the producer sends the features in schema order, without id or labels: what the detector parses
    payload = data.payload(data.raw[0])
    assert payload.count(",") + 1 == schema.n_features and data.raw[0] == f"{payload},Normal"


def test_columns_in_any_order_give_the_same_rows(unsw_path: Path, schema: RecordSchema, tmp_path: Path) -> None:
    lines = gzip.open(unsw_path, "rb").read().split(b"\r\n")[:301]
    header = lines[0].removeprefix(b"\xef\xbb\xbf").split(b",")
    order = np.random.default_rng(3).permutation(len(header))
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_bytes(b"\n".join(b",".join(line.split(b",")[i] for i in order) for line in [b",".join(header),
                                                                                                 *lines[1:]]))
    a = read_records(unsw_path, schema=schema, limit=300)
    b = read_records(shuffled, schema=schema)
    assert a.features.equals(b.features) and a.labels.equals(b.labels)


def test_a_line_with_the_wrong_column_count_and_a_missing_column_are_named(unsw_path: Path, schema: RecordSchema,
                                                                           tmp_path: Path) -> None:
    lines = gzip.open(unsw_path, "rb").read().split(b"\r\n")[:4]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\r\n".join([lines[0], lines[1], lines[2].rsplit(b",", 3)[0], lines[3]]) + b"\r\n")
    data = read_records(bad, schema=schema, strict=False)
    assert len(data) == 2 and [r.line for r in data.rejected] == [3]
    assert "as the header row" in data.rejected[0].reason
    no_dur = tmp_path / "no_dur.csv"
    no_dur.write_bytes(lines[0].replace(b",dur,", b",duration,") + b"\r\n" + lines[1] + b"\r\n")
    with pytest.raises(RecordFormatError, match="no column dur of schema unsw-nb15"):
        read_records(no_dur, schema=schema)


def test_without_the_ttl_features(unsw_path: Path) -> None:
    """The testbed artefact variant: the same file, three features fewer."""
    no_ttl = RecordSchema.load("unsw_nb15_no_ttl")
    data = read_records(unsw_path, schema=no_ttl, limit=100)
    assert {"sttl", "dttl", "ct_state_ttl"}.isdisjoint(data.features.columns)
    assert data.features.shape[1] == RecordSchema.load("unsw_nb15").n_features - 3


def test_kdd99_files_read_as_before(kdd_path: Path) -> None:
    data = read_records(kdd_path, limit=1000)
    assert len(data) == 1000 and data.lines[0] == 1 and data.labels.iloc[0] == "normal"
