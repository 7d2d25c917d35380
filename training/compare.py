"""The lab's comparison: the autoencoder at latent sizes 2, 4, 8 and 16 against other unsupervised detectors,
all fitted on the same normal rows in the same preprocessed space, all judged on the same rows.

Rows: the normal rows are split as training splits them (fit, validation, calibration, test; the same seed
gives the same split); the attacks are halved at random (seeded). *Validation* = validation normals + one
half of the attacks: what a preset is chosen on. *Test* = test normals + the other half: reported, never
chosen on. Labels are read only here, to count.

Detectors (scikit-learn; no new dependency): IsolationForest; the mean distance to the 5 nearest fit rows
(a sample of 20,000); LocalOutlierFactor in novelty mode and a one-class SVM (RBF), both on a sample of 5,000
fit rows (their cost grows with the square of it); and an ensemble that averages each member's rank among
the calibration normals (the autoencoder at latent 8, IsolationForest, kNN distance); and the schema's own
autoencoder preset when it has one (``unsw_nb15``). For each: ROC-AUC,
PR-AUC (average precision), recall at FPR 0.1% and 1% (on the evaluated set's own ROC curve), each with a 95%
bootstrap interval (rows resampled within each class), and fit and score seconds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from sklearn.neighbors import LocalOutlierFactor, NearestNeighbors
from sklearn.svm import OneClassSVM

from core.records import Records, read_records
from core.schema import RecordSchema
from model.preprocessing import Preprocessor
from model.scorer import Scorer
from training.autoencoder import ModelConfig
from training.train import TrainOptions, _fit, split_normal_rows

log = logging.getLogger(__name__)

LATENTS = (2, 4, 8, 16)
FPRS = (0.001, 0.01)
METRICS = ("roc_auc", "pr_auc", "recall_at_fpr_0.1%", "recall_at_fpr_1%")
Score = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Rows:
    """Preprocessed matrices: what detectors fit on, and the two judged sets with their truth."""

    fit: np.ndarray
    fit_validation: np.ndarray  # early stopping for the autoencoders (validation normals only)
    calibration: np.ndarray
    validation: tuple[np.ndarray, np.ndarray]  # (x, is_attack)
    test: tuple[np.ndarray, np.ndarray]
    features_frame: Any  # the raw feature frames per set, for the autoencoder's own scorer
    counts: dict[str, int]


def split_rows(data: Records, seed: int) -> tuple[Preprocessor, Rows]:
    split = split_normal_rows(data, seed)
    attacks = np.flatnonzero(data.is_attack)
    shuffled = np.random.default_rng(seed + 1).permutation(attacks)
    val_attacks, test_attacks = np.sort(shuffled[: len(shuffled) // 2]), np.sort(shuffled[len(shuffled) // 2:])
    feats = data.features
    prep = Preprocessor.fit(feats.iloc[split.fit], data.schema)
    x = prep.transform(feats)
    fit = np.unique(x[split.fit], axis=0)  # de-duplicated, as training fits

    def judged(normal: np.ndarray, attack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([normal, attack])
        return rows, np.concatenate([np.zeros(len(normal), bool), np.ones(len(attack), bool)])

    val_rows, val_y = judged(split.validation, val_attacks)
    test_rows, test_y = judged(split.test, test_attacks)
    rows = Rows(fit=fit, fit_validation=x[split.validation], calibration=x[split.calibration],
                validation=(x[val_rows], val_y), test=(x[test_rows], test_y),
                features_frame={"validation": feats.iloc[val_rows], "test": feats.iloc[test_rows],
                                "calibration": feats.iloc[split.calibration]},
                counts={"fit_rows": len(fit), "validation_normal": len(split.validation),
                        "validation_attack": len(val_attacks), "test_normal": len(split.test),
                        "test_attack": len(test_attacks)})
    return prep, rows


def metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(y, scores)
    out = {"roc_auc": float(roc_auc_score(y, scores)), "pr_auc": float(average_precision_score(y, scores))}
    for target, name in zip(FPRS, METRICS[2:], strict=True):
        out[name] = float(tpr[fpr <= target].max()) if (fpr <= target).any() else 0.0
    return out


def bootstrap(y: np.ndarray, scores: np.ndarray, n: int, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals from ``n`` resamples of the rows, drawn within each class (stratified)."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    draws: dict[str, list[float]] = {m: [] for m in METRICS}
    for _ in range(n):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        for k, v in metrics(y[idx], scores[idx]).items():
            draws[k].append(v)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def _ecdf(reference: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    ref = np.sort(reference)
    return lambda s: np.searchsorted(ref, s, side="right") / len(ref)


def detectors(prep: Preprocessor, rows: Rows, seed: int, epochs: int | None, presets: Sequence[str] = ()
              ) -> dict[str, tuple[Callable[[str], np.ndarray], float]]:
    """Each detector fitted: name -> (score of a named set, fit seconds)."""
    rng = np.random.default_rng(seed)
    sets = {"validation": rows.validation[0], "test": rows.test[0], "calibration": rows.calibration}
    out: dict[str, tuple[Callable[[str], np.ndarray], float]] = {}
    autoencoders = {f"autoencoder latent {k}": ModelConfig.from_preset("default", latent=k, seed=seed, epochs=epochs)
                    for k in LATENTS}
    autoencoders |= {f"autoencoder preset {p}": ModelConfig.from_preset(p, seed=seed, epochs=epochs) for p in presets}
    for name, config in autoencoders.items():
        t0 = time.monotonic()
        model, _, _ = _fit(TrainOptions(data=Path("-"), out=Path("-"), model=config), prep, rows.fit,
                           rows.fit_validation)
        scorer = Scorer(model, prep)
        out[name] = (
            lambda name, s=scorer: s.score_frame(rows.features_frame[name]).score, time.monotonic() - t0)

    def sklearn(make: Callable[[], Any], sample: int | None, score: Callable[[Any, np.ndarray], np.ndarray]
                ) -> tuple[Callable[[str], np.ndarray], float]:
        x = rows.fit if sample is None or len(rows.fit) <= sample else rows.fit[rng.choice(len(rows.fit), sample,
                                                                                               replace=False)]
        t0 = time.monotonic()
        fitted = make().fit(x)
        return (lambda name: score(fitted, sets[name])), time.monotonic() - t0

    out["isolation forest"] = sklearn(lambda: IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1), None,
                                      lambda m, x: -m.score_samples(x))
    out["kNN distance (k=5)"] = sklearn(lambda: NearestNeighbors(n_neighbors=5, n_jobs=-1), 20_000,
                                        lambda m, x: m.kneighbors(x)[0].mean(axis=1))
    out["LOF (novelty)"] = sklearn(lambda: LocalOutlierFactor(n_neighbors=20, novelty=True, n_jobs=-1), 5_000,
                                   lambda m, x: -m.score_samples(x))
    out["one-class SVM (RBF)"] = sklearn(lambda: OneClassSVM(kernel="rbf", gamma="scale", nu=0.01), 5_000,
                                         lambda m, x: -m.score_samples(x))
    members = ["autoencoder latent 8", "isolation forest", "kNN distance (k=5)"]
    ranks = {m: _ecdf(out[m][0]("calibration")) for m in members}
    out["rank ensemble (AE 8, IF, kNN)"] = (
        lambda name: np.mean([ranks[m](out[m][0](name)) for m in members], axis=0),
        sum(out[m][1] for m in members))
    return out


def compare(data_path: Path, schema: RecordSchema, *, seed: int = 42, resamples: int = 200, limit: int | None = None,
            epochs: int | None = None, presets: Sequence[str] = ()) -> dict[str, Any]:
    data = read_records(data_path, schema=schema, limit=limit)
    prep, rows = split_rows(data, seed)
    log.info("%s: %s", data_path, rows.counts)
    results: list[dict[str, Any]] = []
    for name, (score, fit_s) in detectors(prep, rows, seed, epochs, presets).items():
        entry: dict[str, Any] = {"detector": name, "fit_seconds": round(fit_s, 2)}
        for split in ("validation", "test"):
            y = rows.validation[1] if split == "validation" else rows.test[1]
            t0 = time.monotonic()
            scores = np.asarray(score(split), dtype=np.float64)
            entry[f"{split}_score_seconds"] = round(time.monotonic() - t0, 3)
            entry[split] = metrics(y, scores)
            entry[f"{split}_ci95"] = bootstrap(y, scores, resamples, seed)
        results.append(entry)
        log.info("%-32s validation ROC-AUC %.4f, test ROC-AUC %.4f (fit %.1fs)", name,
                 entry["validation"]["roc_auc"], entry["test"]["roc_auc"], fit_s)
    best = max((r for r in results if r["detector"].startswith("autoencoder")),
               key=lambda r: r["validation"]["roc_auc"])
    return {"data": str(data_path), "schema": schema.name, "seed": seed, "bootstrap_resamples": resamples,
            "rows": rows.counts, "results": results, "best_autoencoder_on_validation": best["detector"]}


def markdown(report: dict[str, Any]) -> str:
    """One table: test figures with their 95% intervals, the validation ROC-AUC (what a choice may use)."""
    c = report["rows"]
    lines = [f"{report['schema']}, seed {report['seed']}: fit on {c['fit_rows']:,} normal rows; validation "
             f"{c['validation_normal']:,} normal + {c['validation_attack']:,} attacks; test {c['test_normal']:,} "
             f"normal + {c['test_attack']:,} attacks; 95% bootstrap intervals ({report['bootstrap_resamples']} "
             "resamples).", "",
             "| detector | val ROC-AUC | test ROC-AUC | test PR-AUC | recall @ FPR 0.1% | recall @ FPR 1% | fit s "
             "| score s |", "|---|---|---|---|---|---|---|---|"]

    def cell(r: dict[str, Any], m: str) -> str:
        lo, hi = r["test_ci95"][m]
        return f"{r['test'][m]:.3f} [{lo:.3f}, {hi:.3f}]"

    for r in report["results"]:
        lines.append(f"| {r['detector']} | {r['validation']['roc_auc']:.3f} | "
                     + " | ".join(cell(r, m) for m in METRICS)
                     + f" | {r['fit_seconds']:.1f} | {r['test_score_seconds']:.2f} |")
    return "\n".join(lines)


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(report, indent=2))
    (out / "compare.md").write_text(markdown(report) + "\n")
    return out / "compare.json", out / "compare.md"
