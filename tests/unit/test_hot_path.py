"""The hot path's vectorised forms give exactly what the plain forms they replaced gave (issue 15), and the
frozen heap does not keep a replaced model alive."""

from __future__ import annotations

import datetime as dt
import gc
import gzip
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core import heap, wire
from core.schema import kdd99
from detector.alerts import _iso_many
from detector.drift import DriftMonitor
from detector.evaluation import _labels
from detector.metrics import DetectorMetrics
from model.bundle import load_bundle


def _lines(path: Path, start: int, n: int) -> list[bytes]:
    """File lines without their label, ``n`` of them from line ``start`` (the file's attacks start early)."""
    out: list[bytes] = []
    with gzip.open(path) as f:
        for i, line in enumerate(f):
            if i >= start:
                out.append(line.rstrip(b"\n").rsplit(b",", 1)[0])
            if len(out) == n:
                break
    return out


def test_dictionary_encoded_categories_equal_the_classifying_path(kdd_path: Path) -> None:
    """The plain batch (Arrow, dictionary-encoded categoricals) and the value-by-value path read the same rows."""
    lines = _lines(kdd_path, 0, 3000)
    lines[7] = lines[7].replace(b",tcp,", b", tcp ,", 1)  # padded category: trimmed on both paths
    parser = wire.Parser(kdd99())
    fast = parser.parse(lines)
    slow = parser.parse([*lines, b"{not json"])  # one odd value: the whole batch takes the classifying path
    assert [r.code for r in slow.rejections] == [wire.INVALID_JSON] and fast.rejections == []
    np.testing.assert_array_equal(fast.index, slow.index)
    np.testing.assert_array_equal(fast.numeric, slow.numeric)
    for a, b in zip(fast.categories, slow.categories, strict=True):
        assert a.tolist() == b.tolist()
    assert fast.categories[0][7] == "tcp"


def test_empty_category_is_still_rejected_on_the_dictionary_path(kdd_path: Path) -> None:
    lines = _lines(kdd_path, 0, 50)
    lines[3] = lines[3].replace(b",http,", b",  ,", 1)
    batch = wire.Parser(kdd99()).parse(lines)
    assert [(r.index, r.code) for r in batch.rejections] == [(3, wire.INVALID_VALUE)]
    assert "service" in batch.rejections[0].detail and len(batch.index) == 49


def test_batch_timestamps_format_like_one_at_a_time() -> None:
    def one(ms: int | None) -> str | None:
        if ms is None or ms <= 0:
            return None
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds")

    stamps = [1_796_011_296_921, None, 0, -5, 1, 1_796_011_296_000, 32_503_680_000_000]
    assert _iso_many(stamps) == [one(ms) for ms in stamps]


def _explain_reference(scorer: Any, scores: Any, rows: np.ndarray, cols: dict[str, np.ndarray],
                       top: int = 5) -> list[list[dict[str, Any]]]:
    """The per-cell form the vectorised explanation replaced."""
    def plain(v: Any) -> Any:
        return round(float(v), 6) if isinstance(v, (np.floating, float)) else v

    errors = scores.feature_error[rows]
    order = np.argsort(-errors, axis=1, kind="stable")[:, :top]
    recon = scorer.reconstructed_values(scores.reconstruction[rows])
    names = scorer.schema.names
    return [[{"feature": names[j], "error": float(errors[r, j]), "observed": plain(cols[names[j]][r]),
              "reconstructed": plain(recon[names[j]][r])} for j in order[r]] for r in range(len(rows))]


def test_explanations_equal_the_per_cell_form(small_bundle: Path, kdd_path: Path) -> None:
    from detector.scoring import ScoreStage

    bundle = load_bundle(small_bundle)
    stage = ScoreStage(bundle)
    parsed = wire.Parser(bundle.schema).parse(_lines(kdd_path, 0, 2000))  # normal and attack rows
    scored = stage.score(parsed)
    rows = np.flatnonzero(scored.scores > np.quantile(scored.scores, 0.9))
    cols = parsed.columns(rows)
    got = stage.scorer.explain(scored.result, rows, cols)
    assert got == _explain_reference(stage.scorer, scored.result, rows, cols)
    assert {type(item["observed"]) for r in got for item in r} <= {float, str}


def test_drift_counts_equal_per_feature_counting(small_bundle: Path, kdd_path: Path) -> None:
    bundle = load_bundle(small_bundle)
    profile = bundle.profile()
    assert profile is not None
    schema = bundle.schema
    parsed = wire.Parser(schema).parse(_lines(kdd_path, 0, 4000))
    ids, _ = bundle.scorer().preprocessor.encode_category_columns(parsed.categories)
    monitor = DriftMonitor(profile, schema, DetectorMetrics(1.0), window=10_000)
    monitor.observe(parsed.numeric, ids)
    expected = [np.bincount(np.searchsorted(profile.edges[n], parsed.numeric[:, j], side="right"),
                            minlength=len(profile.edges[n]) + 1) for j, n in enumerate(schema.numeric)]
    expected += [np.bincount(ids[:, j], minlength=len(profile.shares[n])) for j, n in enumerate(schema.categorical)]
    np.testing.assert_array_equal(monitor.total, np.concatenate(expected))
    assert monitor.total.sum() == len(parsed.index) * schema.n_features


def test_drift_window_memory_is_bounded_by_records_not_batches(small_bundle: Path, kdd_path: Path) -> None:
    """Single-record batches used to keep one count vector each (50,000 for the default window); now the window is
    at most ~64 buckets, and it still slides: it never holds much more than the window in records."""
    bundle = load_bundle(small_bundle)
    profile = bundle.profile()
    assert profile is not None
    parsed = wire.Parser(bundle.schema).parse(_lines(kdd_path, 0, 3000))
    ids, _ = bundle.scorer().preprocessor.encode_category_columns(parsed.categories)
    monitor = DriftMonitor(profile, bundle.schema, DetectorMetrics(1.0), window=1_000)
    for i in range(len(parsed.index)):
        monitor.observe(parsed.numeric[i : i + 1], ids[i : i + 1])
        assert len(monitor.batches) <= 1_000 // monitor.bucket_rows + 2  # about 64, whatever the batch size
        assert monitor.rows <= 1_000 + monitor.bucket_rows
    assert monitor.total.sum() == monitor.rows * bundle.schema.n_features


def test_a_hot_swap_to_a_bundle_of_another_schema_is_refused(small_bundle: Path) -> None:
    """Same feature names, another value rule: refused like a corrupt bundle, the running model stays."""
    import dataclasses

    from detector.live_model import load_live
    from model.bundle import BundleError

    running = load_bundle(small_bundle).schema
    other = dataclasses.replace(running, label=dataclasses.replace(running.label, normal="benign"))
    assert other.names == running.names
    with pytest.raises(BundleError, match="differs from the running model"):
        load_live(small_bundle, "alerts", other)
    assert load_live(small_bundle, "alerts", running).bundle.schema == running


class _Msg:
    def __init__(self, headers: list[tuple[str, bytes]] | None) -> None:
        self._headers = headers

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


@pytest.mark.parametrize("with_a_bare_record", [False, True])
def test_label_headers_read_in_bulk(with_a_bare_record: bool) -> None:
    records = [_Msg([("record_id", b"1"), ("label", b"smurf.")]), _Msg([("label", b"normal.")]),
               _Msg([("record_id", b"3")])]
    if with_a_bare_record:
        records.append(_Msg(None))  # no headers at all: headers() is None
    expected = [b"smurf.", b"normal.", None] + ([None] if with_a_bare_record else [])
    assert _labels(records, "label") == expected


class _Model:
    """Stands in for a loaded model: a reference cycle, as Keras layers and their model make."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_cycles_stay_and_later_ones_are_collected() -> None:
    """Why the detector freezes before loading a model: a frozen cycle is never collected."""
    try:
        before = _Model()
        kept = weakref.ref(before)
        heap.freeze_long_lived()
        after = _Model()
        collected = weakref.ref(after)
        del before, after
        gc.collect()
        assert kept() is not None and collected() is None
    finally:
        gc.unfreeze()


def test_detector_freezes_the_runtime_and_a_replaced_model_is_collected(small_bundle: Path) -> None:
    from detector.service import Detector
    from detector.settings import DetectorSettings

    try:
        det = Detector(DetectorSettings(model=small_bundle, metrics_port=0))
        assert gc.get_freeze_count() > 100_000  # TensorFlow and Keras: out of the full passes
        old = weakref.ref(det.live)
        det.live = None  # type: ignore[assignment]  # what a swap does to the previous model
        gc.collect()
        assert old() is None, "the previous model must not outlive a swap"
    finally:
        gc.unfreeze()


def test_bucket_sizes_cover_every_batch_a_detector_can_score() -> None:
    """The warm-up's list (issue 34): every batch size from 1 to the largest pads to one of its sizes."""
    from model.scorer import bucket_size, bucket_sizes

    for rows, max_bucket in ((1, 1 << 14), (100, 1 << 14), (2000, 1 << 14), (5000, 1 << 14), (40_000, 1 << 14),
                             (5000, 2048)):
        sizes = set(bucket_sizes(rows, max_bucket))
        assert {bucket_size(min(n, max_bucket), max_bucket) for n in range(1, rows + 1)} == sizes


JAX_TRACES = """
import sys, numpy as np
from model import backend
assert backend.name() == "jax"
from detector.live_model import load_live
live = load_live(sys.argv[1], "alerts", batch_size=5000)
scorer, k = live.scoring.scorer, len(live.bundle.schema.categorical)
warmed = scorer.traces
for n in (1, 63, 65, 200, 1000, 1025, 2047, 3000, 4999, 5000):
    scorer.score_arrays(np.zeros((n, len(live.bundle.schema.numeric)), np.float32), np.zeros((n, k), np.int32))
print(warmed, scorer.traces)
"""


def test_jax_compiles_every_batch_size_before_it_serves(small_bundle: Path) -> None:
    """JAX compiles once per input shape: a detector that warmed one shape compiled mid-stream on each new batch
    size (p99 1.2 s at 10,000/s, issue 34). After the warm-up no batch up to the batch size traces again."""
    import os
    import subprocess
    import sys

    from testkit import QUIET_TF, REPO

    proc = subprocess.run([sys.executable, "-c", JAX_TRACES, str(small_bundle)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **QUIET_TF, "KERAS_BACKEND": "jax"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    warmed, after = map(int, proc.stdout.split()[-2:])
    assert warmed >= 9 and after == warmed  # 64 ... 1,024, 2,048, 3,072, 4,096, 5,120: nothing left to compile
