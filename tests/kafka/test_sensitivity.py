"""Sensitivity at serve time and live evaluation: thresholds from the bundle's calibration scores, no retraining."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from core.decision import is_anomalous
from core.records import read_records
from model.bundle import load_bundle
from model.calibration import ScoreDistribution
from testkit import REPO, DetectorProcess, alert_docs, drain, produce_rows, wait_until
from tests.conftest import TopicFactory
from training.detection_metrics import threshold_at_fpr


def test_score_distribution_places_thresholds_and_ranks() -> None:
    scores = np.random.default_rng(0).lognormal(-8, 1.5, 9_728)
    dist = ScoreDistribution.fit(scores)
    assert dist.threshold_at(0.01) == threshold_at_fpr(scores, 0.01)  # on the grid: exactly training's rule
    for fpr in (1e-4, 0.003, 0.05, 0.2):
        share = float(np.mean(scores > dist.threshold_at(fpr)))
        assert share == pytest.approx(fpr, abs=max(2e-4, 0.02 * fpr))
    ranks = dist.normal_rank(np.sort(scores))
    assert np.all(np.diff(ranks) >= 0) and 0 <= ranks.min() and ranks.max() <= 1
    assert dist.normal_rank(np.array([scores.max() * 10]))[0] == 1.0
    again = ScoreDistribution.from_dict(json.loads(dist.to_json()))
    assert again.threshold_at(0.05) == dist.threshold_at(0.05)
    with pytest.raises(ValueError, match="target FPR"):
        dist.threshold_at(0.9)


def test_target_fpr_moves_the_threshold_without_retraining_and_labels_are_counted(
        kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    data = read_records(kdd_path, limit=8_000, keep_raw=True)
    topic, alerts = make_topic("fpr-in", 2), make_topic("fpr-alerts", 2)
    produce_rows(kafka_bootstrap, topic, data)
    bundle = load_bundle(small_bundle)
    threshold = bundle.threshold_for(0.05)
    assert threshold < bundle.threshold  # a 5% false-positive budget sits below the bundle's 1%
    scores = bundle.scorer().score_frame(data.features).score
    flagged = is_anomalous(scores, threshold)
    assert int(flagged.sum()) > int(is_anomalous(scores, bundle.threshold).sum())
    families = data.families()
    expected = Counter(zip(families.tolist(), np.where(flagged, "alert", "pass").tolist(), strict=True))
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, "--target-fpr", "0.05",
                         log_path=tmp_path / "detector.log") as det:
        wait_until(lambda: det.total("detector_records_scored_total") >= len(data), 120, "all records scored")
        m = det.metrics()
        assert m["detector_model_threshold"] == pytest.approx(threshold, rel=1e-12)
        for (family, decision), n in expected.items():
            assert m[f"detector_decisions_total{{decision={decision},family={family}}}"] == n, (family, decision)
        assert det.total("detector_decisions_total") == len(data)
    docs = alert_docs(drain(kafka_bootstrap, alerts, int(flagged.sum())))
    assert {int(d["record_id"]) for d in docs} == set(data.record_ids[flagged].tolist())
    schema = json.loads((REPO / "detector" / "schemas" / "alert.schema.json").read_text())
    dist = bundle.calibration()
    validator = jsonschema.Draft202012Validator(schema)
    for doc in docs[:500]:
        validator.validate(doc)
        assert doc["threshold"] == pytest.approx(threshold, rel=1e-12)
        assert doc["normal_rank"] == pytest.approx(float(dist.normal_rank(np.array([doc["score"]]))[0]), abs=1e-9)
        assert doc["normal_rank"] >= 0.94  # above the 5% line: rarer than ~95% of normal rows


def test_evaluate_takes_the_same_target_fpr(small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    from training.evaluate import evaluate

    own = evaluate(small_bundle, kdd_path, tmp_path / "own", baseline=False, plots=False)
    wide = evaluate(small_bundle, kdd_path, tmp_path / "wide", baseline=False, plots=False, target_fpr=0.05)
    assert wide["threshold"] == pytest.approx(load_bundle(small_bundle).threshold_for(0.05))
    assert wide["target_fpr"] == 0.05 and own["target_fpr"] is None
    assert wide["fpr_at_threshold"] > own["fpr_at_threshold"] and wide["recall_at_threshold"] >= own[
        "recall_at_threshold"]
