"""Evaluation: score a labelled file (the bundle's schema) with a bundle and write ``report.json`` and plots.

When the file is the bundle's own training file (same sha256), the rows that trained, stopped or
calibrated the model are excluded, so the report is always about traffic the model has not seen.
The IsolationForest baseline is fitted on exactly the normal rows the autoencoder was fitted on, in the
same preprocessed space, so the comparison is about the model, not the features.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from core.decision import is_anomalous
from core.records import Records, read_records
from model.bundle import Bundle, load_bundle, sha256_file
from training import plots as plotting
from training.detection_metrics import detection_rates, headline, threshold_at_fpr
from training.train import Split, split_normal_rows

log = logging.getLogger(__name__)


def training_split(bundle: Bundle) -> tuple[Records, Split] | None:
    """The training file and its split, if that file is still where training read it, unchanged."""
    info = bundle.manifest.get("training", {})
    path = Path(info.get("data_file", ""))
    if not path.is_file() or sha256_file(path) != bundle.manifest["data_sha256"]:
        return None
    data = read_records(path, schema=bundle.schema, limit=info.get("limit"))
    return data, split_normal_rows(data, int(info["split"]["seed"]))


def evaluate(model_dir: Path, data_path: Path, out: Path, *, baseline: bool = True, plots: bool = True,
             seed: int = 0, scores_out: Path | None = None, target_fpr: float | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    bundle = load_bundle(model_dir)
    scorer = bundle.scorer()
    log.info("reading %s", data_path)
    data = read_records(data_path, schema=bundle.schema)
    if data.labels is None:
        raise ValueError(f"{data_path} has no labels; evaluation needs a labelled file")
    same_file = sha256_file(data_path) == bundle.manifest["data_sha256"]
    rows = heldout_rows(bundle, data, data_path) if same_file else np.arange(len(data))
    excluded = len(data) - len(rows)
    feats = data.features.iloc[rows].reset_index(drop=True)
    labels = data.labels.iloc[rows].to_numpy()
    y = bundle.schema.is_attack(labels)
    families = np.asarray(data.families())[rows]
    log.info("scoring %d rows", len(rows))
    t_score = time.monotonic()
    scores = scorer.score_frame(feats)
    score_seconds = time.monotonic() - t_score
    threshold = bundle.threshold_for(target_fpr)
    flagged = is_anomalous(scores.score, threshold)
    _, unknown = bundle.preprocessor.encode_categories(feats)

    report: dict[str, Any] = {
        "model_version": bundle.version,
        "target_fpr": target_fpr,
        "data": str(data_path),
        "data_sha256": sha256_file(data_path),
        "heldout_only": same_file,
        "excluded_training_rows": excluded,
        "rows_scored": int(len(rows)),
        "normal_rows": int((~y).sum()),
        "attack_rows": int(y.sum()),
        "rejected_lines": len(data.rejected),
        "unknown_categories": dict(zip(bundle.schema.categorical, (int(u) for u in unknown), strict=True)),
        **headline(y, scores.score, threshold),
        "detection_rate_by_attack": detection_rates(labels[y], flagged[y]),
        "detection_rate_by_family": detection_rates(families[y], flagged[y]),
        "score_rows_per_second": round(len(rows) / score_seconds, 1) if score_seconds else None,
        "baselines": {},
    }
    baseline_scores = _baseline(report, bundle, feats, y, seed) if baseline else None
    out.mkdir(parents=True, exist_ok=True)
    if scores_out is not None:
        pd.DataFrame({"record_id": data.record_ids[rows], "label": labels, "score": scores.score,
                      "flagged": flagged}).to_csv(scores_out, index=False, float_format="%.9g")
        report["scores_file"] = str(scores_out)
    if plots:
        report["plots"] = plotting.write_all(out, bundle, scores.score, y, families, threshold, feats,
                                             baseline_scores, seed=seed)
    report["seconds"] = round(time.monotonic() - t0, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    log.info("report written to %s: ROC-AUC %.5f, recall %.4f at FPR %.4f", out / "report.json",
             report["roc_auc"] or float("nan"), report["recall_at_threshold"], report["fpr_at_threshold"])
    return report


def heldout_rows(bundle: Bundle, data: Records, data_path: Path) -> np.ndarray:
    """Positions of the rows that did not train, stop or calibrate the bundle (evaluating its own file)."""
    train_info = bundle.manifest["training"]
    limit = train_info.get("limit")
    ref = read_records(data_path, schema=bundle.schema, limit=limit) if limit else data
    used = ref.lines[split_normal_rows(ref, int(train_info["split"]["seed"])).training_rows()]
    keep = ~np.isin(data.lines, used)
    log.info("this is the training file: %d rows used in training are excluded", int((~keep).sum()))
    return np.flatnonzero(keep)


def _baseline(report: dict[str, Any], bundle: Bundle, feats: Any, y: np.ndarray, seed: int) -> np.ndarray | None:
    found = _isolation_forest(bundle, feats, seed)
    if found is None:
        report["baselines"]["isolation_forest"] = {"skipped": "training file not found or changed"}
        return None
    baseline_scores, iso_threshold = found
    report["baselines"]["isolation_forest"] = {
        **headline(y, baseline_scores, iso_threshold),
        "fitted_on": "the autoencoder's fit rows, in the same preprocessed space",
        "threshold_rule": "same target FPR on the same calibration rows as the autoencoder",
    }
    return baseline_scores


def _isolation_forest(bundle: Bundle, feats: Any, seed: int) -> tuple[np.ndarray, float] | None:
    """IsolationForest on the autoencoder's own fit rows, thresholded by the same rule on the same rows."""
    found = training_split(bundle)
    if found is None:
        return None
    train_data, split = found
    prep = bundle.preprocessor
    forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1)
    forest.fit(prep.transform(train_data.features.iloc[split.fit]))
    calibration = -forest.score_samples(prep.transform(train_data.features.iloc[split.calibration]))
    threshold = threshold_at_fpr(calibration, float(bundle.manifest["training"]["target_fpr"]))
    return -forest.score_samples(prep.transform(feats)), threshold
