"""Metric code on cases whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training import detection_metrics as metrics


def test_threshold_at_fpr_flags_at_most_target_share() -> None:
    normal = np.arange(1, 101, dtype=float)  # 1..100
    t = metrics.threshold_at_fpr(normal, 0.05)
    assert t == 96.0  # rows 97..100 exceed it: 4% <= 5%
    assert np.mean(normal > t) <= 0.05
    with pytest.raises(ValueError, match="target FPR"):
        metrics.threshold_at_fpr(normal, 0.0)
    with pytest.raises(ValueError, match="zero normal rows"):
        metrics.threshold_at_fpr(np.array([]), 0.01)


def test_at_threshold_confusion_matrix_by_hand() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.2, 0.8, 0.9, 1.0])
    r = metrics.at_threshold(y, s, 0.5)
    assert r["confusion_matrix"] | {} == {"tn": 3, "fp": 1, "fn": 1, "tp": 3, "layout": "[[tn, fp], [fn, tp]]"}
    assert r["recall_at_threshold"] == 0.75
    assert r["precision_at_threshold"] == 0.75
    assert r["fpr_at_threshold"] == 0.25
    assert r["f1_at_threshold"] == pytest.approx(0.75)


def test_headline_auc_extremes() -> None:
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert metrics.headline(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)["roc_auc"] == 1.0
    assert metrics.headline(y, np.array([0.9, 0.8, 0.2, 0.1]), 0.5)["roc_auc"] == 0.0
    assert metrics.headline(y, np.array([0.1, 0.2, 0.8, 0.9]), 0.5)["pr_auc"] == 1.0
    # one class only: AUC undefined, reported as None rather than a crash
    assert metrics.headline(np.zeros(3, bool), np.array([1.0, 2.0, 3.0]), 2.5)["roc_auc"] is None


def test_top_k_f1_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert metrics.top_k_f1(y, np.array([5, 4, 3, 2, 1])) == 1.0
    assert metrics.top_k_f1(y, np.array([5, 1, 4, 2, 3])) == 0.5
    assert metrics.top_k_f1(y, np.array([1, 2, 5, 4, 3])) == 0.0


def test_detection_rates_per_group() -> None:
    rates = metrics.detection_rates(np.array(["a", "a", "b"]), np.array([True, False, True]))
    assert rates == {"a": {"rows": 2, "flagged": 1, "rate": 0.5}, "b": {"rows": 1, "flagged": 1, "rate": 1.0}}
