"""Training: normal rows in, model bundle out. Labels only select the normal rows; nothing else sees them.

Normal rows are split once, by a seeded permutation, into four parts: ``fit`` (the autoencoder and the
preprocessing learn from these), ``validation`` (early stopping), ``calibration`` (the threshold at the
target false-positive rate) and ``test`` (never touched here; ``evaluate`` recomputes the split from the
bundle and scores these with every attack row, so no row used in training is ever scored as held-out).

The fit rows are de-duplicated: the 10% file repeats common normal connections thousands of times, and
repeats teach the model nothing but drown the rare normal behaviour that otherwise becomes false alarms.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.decision import is_anomalous
from core.records import Records, read_records
from core.schema import RecordSchema
from model.bundle import sha256_file
from model.calibration import CALIBRATION_FILE, ScoreDistribution
from model.preprocessing import Preprocessor
from model.profile import PROFILE_FILE, FeatureProfile
from model.scorer import Scorer
from training.autoencoder import ModelConfig, build_autoencoder
from training.bundle_writer import save_bundle
from training.detection_metrics import threshold_at_fpr

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = {"fit": 0.70, "validation": 0.10, "calibration": 0.10, "test": 0.10}


@dataclasses.dataclass(frozen=True)
class Split:
    fit: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    test: np.ndarray

    def training_rows(self) -> np.ndarray:
        """Every row that influenced the bundle: excluded from held-out evaluation."""
        return np.concatenate([self.fit, self.validation, self.calibration])


def split_normal_rows(data: Records, seed: int) -> Split:
    """Deterministic split of the normal rows (row positions into ``data``) from the seed alone."""
    normal = np.flatnonzero(~data.is_attack) if data.labels is not None else np.arange(len(data))
    if len(normal) < 100:
        raise ValueError(f"{data.source}: only {len(normal)} normal rows; training needs at least 100")
    order = np.random.default_rng(seed).permutation(normal)
    cuts = np.cumsum([int(round(f * len(order))) for f in SPLIT_FRACTIONS.values()])[:-1]
    fit, val, cal, test = np.split(order, cuts)
    return Split(np.sort(fit), np.sort(val), np.sort(cal), np.sort(test))


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    data: Path
    out: Path
    model: ModelConfig
    target_fpr: float = 0.01
    run_dir: Path | None = None
    dedup: bool = True
    limit: int | None = None
    schema: RecordSchema | None = None  # default: KDD99


class _EpochLog:
    """Keras callback that reports each epoch through logging, so long training shows progress."""

    def __new__(cls, total: int) -> Any:
        class EpochLog(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.t0 = time.monotonic()

            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                logs = logs or {}
                log.info("epoch %d/%d  loss=%.6f  val_loss=%.6f  (%.0fs)", epoch + 1, total,
                         logs.get("loss", float("nan")), logs.get("val_loss", float("nan")),
                         time.monotonic() - self.t0)

        return EpochLog()


def _fit(opts: TrainOptions, prep: Preprocessor, x_fit: np.ndarray, x_val: np.ndarray) -> tuple[Any, Any, float]:
    """The autoencoder fitted to reconstruct the fit rows; early stopping on the validation rows."""
    keras.utils.set_random_seed(opts.model.seed)
    model = build_autoencoder(prep.width, opts.model)
    callbacks: list[Any] = [_EpochLog(opts.model.epochs)]
    if opts.model.patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.model.patience,
                                                       restore_best_weights=True))
    if opts.run_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(opts.run_dir / "tensorboard"), write_graph=True))
    t_fit = time.monotonic()
    history = model.fit(
        x_fit, x_fit, batch_size=opts.model.batch_size, epochs=opts.model.epochs, shuffle=True,
        validation_data=(x_val, x_val), callbacks=callbacks, verbose=0,
    )
    return model, history, time.monotonic() - t_fit


def _training_info(opts: TrainOptions, data: Records, split: Split, fit_rows: int, fit_seconds: float,
                   source: dict[str, Any] | None) -> dict[str, Any]:
    """How the bundle was made, for its manifest: enough to redo the split and to trace the data."""
    return {
        "model": opts.model.to_dict(),
        "target_fpr": opts.target_fpr,
        "dedup": opts.dedup,
        "schema": data.schema.name,
        "data_file": data.source if source else str(Path(opts.data).resolve()),
        "stream": source,
        "data_rows": len(data),
        "limit": opts.limit,
        "split": {"seed": opts.model.seed, "fractions": SPLIT_FRACTIONS,
                  "rows": {k: int(len(v)) for k, v in dataclasses.asdict(split).items()}},
        "fit_rows_after_dedup": fit_rows,
        "fit_seconds": round(fit_seconds, 1),
    }


def _calibrate(opts: TrainOptions, scorer: Scorer, feats: Any, split: Split, losses: dict[str, list[float]]
               ) -> tuple[float, ScoreDistribution, dict[str, Any]]:
    """The threshold at the target false-positive rate on the calibration rows, their score distribution (for
    thresholds chosen later), and what to record of it."""
    cal_scores = scorer.score_frame(feats.iloc[split.calibration]).score
    threshold = threshold_at_fpr(cal_scores, opts.target_fpr)
    val_scores = scorer.score_frame(feats.iloc[split.validation]).score
    return threshold, ScoreDistribution.fit(cal_scores), {
        "best_val_loss": float(min(losses["val_loss"])),
        "epochs_run": len(losses["loss"]),
        "calibration_fpr": float(np.mean(is_anomalous(cal_scores, threshold))),
        "validation_fpr": float(np.mean(is_anomalous(val_scores, threshold))),
        "calibration_rows": int(len(split.calibration)),
        "score_quantiles_normal": {
            q: float(np.quantile(cal_scores, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")
        },
    }


def train(opts: TrainOptions, stream: tuple[Records, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train, calibrate and write the bundle; returns a summary (also logged).

    The rows come from ``opts.data``, or from ``stream`` (rows read from Kafka and the report of the read).
    """
    t_start = time.monotonic()
    if stream is None:
        log.info("reading %s", opts.data)
    data = stream[0] if stream else read_records(opts.data, schema=opts.schema, limit=opts.limit)
    data_sha = stream[1]["payload_sha256"] if stream else sha256_file(opts.data)
    split = split_normal_rows(data, opts.model.seed)
    log.info("%d rows, %d normal: fit %d, validation %d, calibration %d, held out %d", len(data),
             sum(len(p) for p in dataclasses.astuple(split)), len(split.fit), len(split.validation),
             len(split.calibration), len(split.test))

    feats = data.features
    prep = Preprocessor.fit(feats.iloc[split.fit], data.schema)
    x_fit = prep.transform(feats.iloc[split.fit])
    if opts.dedup:
        before = len(x_fit)
        x_fit = np.unique(x_fit, axis=0)
        log.info("de-duplicated fit rows: %d -> %d", before, len(x_fit))
    x_val = prep.transform(feats.iloc[split.validation])
    model, history, fit_seconds = _fit(opts, prep, x_fit, x_val)

    losses = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    threshold, distribution, validation = _calibrate(opts, Scorer(model, prep), feats, split, losses)
    training_info = _training_info(opts, data, split, len(x_fit), fit_seconds, stream[1] if stream else None)
    profile = FeatureProfile.fit(data.schema, feats.iloc[split.fit], dict(prep.categories))
    out = save_bundle(
        opts.out, model=model, preprocessor=prep, threshold=threshold, training=training_info,
        data_sha256=data_sha, validation=validation,
        extra_files={"history.json": json.dumps(losses), PROFILE_FILE: profile.to_json(),
                     CALIBRATION_FILE: distribution.to_json()},
    )
    summary = {"bundle": str(out), "threshold": threshold, **validation, "fit_seconds": round(fit_seconds, 1),
               "total_seconds": round(time.monotonic() - t_start, 1), **({"stream": stream[1]} if stream else {})}
    log.info("bundle written to %s: threshold %.6g, calibration FPR %.4f, fit %.1fs, total %.1fs", out,
             threshold, validation["calibration_fpr"], fit_seconds, summary["total_seconds"])
    return summary
