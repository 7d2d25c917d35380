"""The KDDRev protocol of DAGMM (Zong et al., 2018) and GOAD (Bergman & Hoshen, 2020).

Normal traffic is the normal class; attack rows are sampled so that there is one attack for every four
normal rows; the data is split 50/50 at random; the model trains on the normal rows of the first half
only; on the second half, as many rows are flagged as there are anomalies, and F1 is reported (with
exactly k flagged, precision = recall = F1). Mean and standard deviation over seeds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from sklearn.ensemble import IsolationForest

from core.records import read_records
from core.schema import RecordSchema
from model.preprocessing import Preprocessor
from model.scorer import Scorer
from training.autoencoder import ModelConfig, build_autoencoder
from training.detection_metrics import top_k_f1

log = logging.getLogger(__name__)

PUBLISHED_F1 = {"DAGMM": 93.8, "GOAD": 98.9}


def run(data_path: Path, config: ModelConfig, seeds: int = 5, dedup: bool = True,
        baseline: bool = True, schema: RecordSchema | None = None) -> dict[str, Any]:
    data = read_records(data_path, schema=schema)
    y = data.is_attack
    f1s: list[float] = []
    iso_f1s: list[float] = []
    t0 = time.monotonic()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        normal = rng.permutation(np.flatnonzero(~y))
        attacks = rng.permutation(rng.choice(np.flatnonzero(y), size=len(normal) // 4, replace=False))
        train_normal, test_normal = np.array_split(normal, 2)
        test_attacks = np.array_split(attacks, 2)[1]
        n_val = len(train_normal) // 10
        val, fit = train_normal[:n_val], train_normal[n_val:]
        prep = Preprocessor.fit(data.features.iloc[fit], data.schema)
        x_fit = prep.transform(data.features.iloc[fit])
        if dedup:
            x_fit = np.unique(x_fit, axis=0)
        x_val = prep.transform(data.features.iloc[val])
        keras.utils.set_random_seed(seed)
        model = build_autoencoder(prep.width, config)
        callbacks = [keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)] \
            if config.patience else []
        model.fit(x_fit, x_fit, batch_size=config.batch_size, epochs=config.epochs, validation_data=(x_val, x_val),
                  callbacks=callbacks, verbose=0)
        test = np.concatenate([test_normal, test_attacks])
        y_test = np.concatenate([np.zeros(len(test_normal), bool), np.ones(len(test_attacks), bool)])
        scores = Scorer(model, prep).score_frame(data.features.iloc[test]).score
        f1s.append(top_k_f1(y_test, scores))
        msg = f"seed {seed}: autoencoder F1 {100 * f1s[-1]:.2f}"
        if baseline:
            forest = IsolationForest(n_estimators=200, random_state=seed, n_jobs=-1).fit(x_fit)
            iso_f1s.append(top_k_f1(y_test, -forest.score_samples(prep.transform(data.features.iloc[test]))))
            msg += f", isolation forest F1 {100 * iso_f1s[-1]:.2f}"
        log.info("%s (%.0fs elapsed)", msg, time.monotonic() - t0)
    result: dict[str, Any] = {
        "protocol": "KDDRev",
        "seeds": seeds,
        "f1_mean": round(100 * float(np.mean(f1s)), 2),
        "f1_std": round(100 * float(np.std(f1s)), 2),
        "f1_per_seed": [round(100 * f, 2) for f in f1s],
        "published": PUBLISHED_F1,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if iso_f1s:
        result["isolation_forest_f1_mean"] = round(100 * float(np.mean(iso_f1s)), 2)
        result["isolation_forest_f1_std"] = round(100 * float(np.std(iso_f1s)), 2)
    return result


def format_table(result: dict[str, Any]) -> str:
    rows = [("this autoencoder", f"{result['f1_mean']:.2f} ± {result['f1_std']:.2f}")]
    if "isolation_forest_f1_mean" in result:
        rows.append(("IsolationForest (same features)",
                     f"{result['isolation_forest_f1_mean']:.2f} ± {result['isolation_forest_f1_std']:.2f}"))
    rows += [(f"{k} (published)", f"{v:.1f}") for k, v in result["published"].items()]
    width = max(len(r[0]) for r in rows)
    lines = [f"KDDRev F1 over {result['seeds']} seeds"] + [f"  {name:<{width}}  {val}" for name, val in rows]
    return "\n".join(lines)
