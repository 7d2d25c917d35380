"""Scoring is backend-portable: one bundle, trained on TensorFlow, scores the same under ``KERAS_BACKEND=jax``
(JAX is light enough for CI; torch is not installed here), and the detector on JAX never imports TensorFlow.
Each backend runs in its own process, as Keras picks its backend once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.records import read_records
from testkit import REPO, DetectorProcess, alert_docs, drain, offline_alert_ids, produce_rows, wait_until
from tests.conftest import TopicFactory

ROWS = 20_000


def run_jax(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_jax_scores_equal_tensorflow_scores(small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    from model.bundle import load_bundle

    bundle = load_bundle(small_bundle)
    data = read_records(kdd_path, limit=ROWS)
    tf_scores = bundle.scorer().score_frame(data.features)
    ref = tmp_path / "tensorflow.npz"
    np.savez(ref, score=tf_scores.score, feature_error=tf_scores.feature_error)
    proc = run_jax("-m", "scripts.gpu_check", "run", "--bundle", str(small_bundle), "--data", str(kdd_path),
                   "--limit", str(ROWS), "--reference", str(ref), "--batch-sizes", "4096")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    agreement = result["agreement"]
    assert agreement["rows"] == ROWS and agreement["agree"], agreement
    assert agreement["max_rel_diff"] < 1e-4 and agreement["max_abs_feature_error_diff"] < 1e-5
    near = np.abs(tf_scores.score - bundle.threshold) <= 1e-4 * bundle.threshold
    assert agreement["decisions_differing"] <= int(near.sum())  # only rows on the threshold may flip


def test_scoring_on_jax_imports_no_tensorflow(small_bundle: Path) -> None:
    code = ("import sys\nimport detector.service\nfrom model.bundle import load_bundle\n"
            "from model import backend\n"
            f"load_bundle({str(small_bundle)!r}).scorer()\n"
            "print(backend.name(), backend.device(), 'tensorflow' in sys.modules)\n")
    proc = run_jax("-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["jax", "CPU", "False"]


@pytest.mark.kafka
def test_detector_on_jax_alerts_like_tensorflow(small_bundle: Path, kdd_path: Path, kafka_bootstrap: str,
                                                make_topic: TopicFactory, tmp_path: Path) -> None:
    topic, alerts = make_topic("jax-in", 2), make_topic("jax-alerts", 2)
    data = read_records(kdd_path, limit=ROWS, keep_raw=True)
    expected, scores = offline_alert_ids(small_bundle, data)  # TensorFlow, in this process
    from model.bundle import load_bundle

    threshold = load_bundle(small_bundle).threshold
    on_edge = {int(i) for i in data.record_ids[np.abs(scores - threshold) <= 1e-4 * threshold]}
    produce_rows(kafka_bootstrap, topic, data)
    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, env={"KERAS_BACKEND": "jax"},
                          log_path=tmp_path / "detector.log")
    with det:
        wait_until(lambda: det.total("detector_records_scored_total") >= ROWS, 180, "every row scored on JAX")
        info = {k: v for k, v in det.metrics().items() if k.startswith("detector_device_info")}
        assert "detector_device_info{backend=jax,device=CPU}" in info, info
        # every row was scored, so the alert topic is complete once the detector committed the last batch
        wait_until(lambda: det.total("detector_alerts_total") >= len(expected - on_edge), 60, "alerts published")
        got = {int(d["record_id"]) for d in alert_docs(drain(kafka_bootstrap, alerts, len(expected - on_edge)))}
    assert got ^ expected <= on_edge, f"{len(expected - got)} missing, {len(got - expected)} unexpected"
