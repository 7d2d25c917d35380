"""Preprocessing: fitted on normal rows, JSON round-trip, unknown categories, clipping, log scaling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.schema import kdd99
from model.preprocessing import UNKNOWN, PreprocessingError, Preprocessor

FEATURES = kdd99().names
NUMERIC = kdd99().numeric


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {name: 0.0 for name in NUMERIC} | {"protocol_type": "tcp", "service": "http", "flag": "SF"}
    return pd.DataFrame([base | r for r in rows])[list(FEATURES)]


@pytest.fixture
def prep() -> Preprocessor:
    return Preprocessor.fit(frame([
        {"src_bytes": 0.0, "count": 1.0, "same_srv_rate": 0.0},
        {"src_bytes": 1e6, "count": 511.0, "same_srv_rate": 1.0, "service": "smtp", "flag": "REJ"},
    ]))


def test_scaling_range_and_log(prep: Preprocessor) -> None:
    x = prep.transform(frame([{"src_bytes": 1e6, "count": 511.0, "same_srv_rate": 1.0}]))
    i = list(NUMERIC).index
    assert x[0, i("src_bytes")] == pytest.approx(1.0)
    # log1p puts 1000 bytes at half the log-range of 0..1e6: log(1001)/log(1e6+1) ~= 0.5
    mid = prep.transform(frame([{"src_bytes": 1000.0}]))[0, i("src_bytes")]
    assert mid == pytest.approx(np.log1p(1000) / np.log1p(1e6), rel=1e-5)
    assert x[0, i("same_srv_rate")] == pytest.approx(1.0)


def test_out_of_range_values_are_clipped(prep: Preprocessor) -> None:
    x = prep.transform(frame([{"src_bytes": 1e12, "count": 1e9, "duration": 5.0}]))
    assert x.min() >= 0.0 and x.max() <= 1.0
    i = list(NUMERIC).index
    # duration is constant (0) on the fit rows: unit scale, so 5 seconds is a full-scale deviation
    assert x[0, i("duration")] == pytest.approx(1.0)


def test_unknown_category_goes_to_its_own_slot_and_is_counted(prep: Preprocessor) -> None:
    f = frame([{"service": "gopher"}, {"service": "smtp"}])
    ids, unknown = prep.encode_categories(f)
    assert unknown.tolist() == [0, 1, 0]
    assert ids[0, 1] == len(prep.categories["service"])  # the unknown slot is the last one
    names = prep.output_names
    x = prep.transform(f)
    assert x[0, names.index(f"service={UNKNOWN}")] == 1.0
    assert x[1, names.index("service=smtp")] == 1.0
    assert x.shape[1] == prep.width == len(NUMERIC) + (1 + 1) + (2 + 1) + (2 + 1)


def test_json_round_trip_is_exact(prep: Preprocessor, tmp_path) -> None:
    path = tmp_path / "p.json"
    prep.save(path)
    again = Preprocessor.load(path)
    f = frame([{"src_bytes": 1234.0, "service": "smtp"}, {"count": 77.0, "flag": "XX"}])
    assert np.array_equal(prep.transform(f), again.transform(f))
    assert again == prep


def test_artifact_with_other_feature_order_is_refused(prep: Preprocessor) -> None:
    raw = prep.to_dict()
    raw["features"] = list(reversed(raw["features"]))
    with pytest.raises(PreprocessingError, match="feature order"):
        Preprocessor.from_dict(raw)
    raw = json.loads(json.dumps(prep.to_dict())) | {"version": 99}
    with pytest.raises(PreprocessingError, match="retrain"):
        Preprocessor.from_dict(raw)
