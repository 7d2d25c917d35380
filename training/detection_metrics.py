"""Evaluation metrics for a score and a threshold, with labels used only here, never in training."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from core.decision import is_anomalous


def threshold_at_fpr(normal_scores: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold flagging at most ``target_fpr`` of the given normal rows (rows flag when score > t).

    Uses the empirical quantile with 'higher' interpolation: the threshold is an observed score, so on
    the calibration rows themselves the false-positive rate never exceeds the target.
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target FPR must be in (0, 1), got {target_fpr}")
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot calibrate a threshold on zero normal rows")
    return float(np.quantile(scores, 1.0 - target_fpr, method="higher"))


def at_threshold(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Confusion matrix and rates when rows with ``score > threshold`` are flagged."""
    y = np.asarray(y_true, dtype=bool)
    pred = is_anomalous(scores, threshold)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[False, True]).ravel())
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "recall_at_threshold": recall,
        "precision_at_threshold": precision,
        "fpr_at_threshold": fpr,
        "f1_at_threshold": f1,
        "confusion_matrix": {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "layout": "[[tn, fp], [fn, tp]]"},
    }


def headline(y_true: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """ROC-AUC, PR-AUC (average precision) and the at-threshold figures."""
    y = np.asarray(y_true, dtype=bool)
    both = bool(y.any() and (~y).any())
    return {
        "roc_auc": float(roc_auc_score(y, scores)) if both else None,
        "pr_auc": float(average_precision_score(y, scores)) if both else None,
        "recall_at_fpr": {f"{f:g}": recall_at_fpr(y, scores, f) for f in (0.01, 0.001)} if both else None,
        **at_threshold(y, scores, threshold),
    }


def recall_at_fpr(y_true: np.ndarray, scores: np.ndarray, fpr: float) -> float:
    """The share of attacks above the threshold that flags at most ``fpr`` of the normal rows (the threshold is
    placed on this file's own normal scores: what a threshold tuned for that rate would catch)."""
    y = np.asarray(y_true, dtype=bool)
    threshold = threshold_at_fpr(np.asarray(scores)[~y], fpr)
    return float((np.asarray(scores)[y] > threshold).mean())


def detection_rates(groups: np.ndarray, flagged: np.ndarray) -> dict[str, dict[str, float | int]]:
    """Share flagged per group (attack type or family): rows, flagged, rate."""
    out: dict[str, dict[str, float | int]] = {}
    groups = np.asarray(groups).astype(str)
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        n = int(mask.sum())
        k = int(np.asarray(flagged)[mask].sum())
        out[g] = {"rows": n, "flagged": k, "rate": k / n if n else 0.0}
    return out


def top_k_f1(y_true: np.ndarray, scores: np.ndarray) -> float:
    """F1 when exactly as many rows are flagged as there are anomalies (the KDDRev protocol).

    Ties at the cut are broken by position (stable sort) so exactly k rows are flagged.
    """
    y = np.asarray(y_true, dtype=bool)
    k = int(y.sum())
    if k == 0:
        raise ValueError("top-k F1 needs at least one anomaly")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    flagged = np.zeros_like(y)
    flagged[order[:k]] = True
    tp = int((flagged & y).sum())
    return tp / k  # precision == recall when exactly k rows are flagged, so F1 equals both
