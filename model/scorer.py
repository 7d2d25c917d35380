"""Anomaly score: mean squared reconstruction error of the preprocessed row, higher is more anomalous.

Scoring is kept apart from deciding (the threshold lives in the bundle; ``core.decision`` applies it).
The whole path from raw numerics and category ids to score is one compiled function, written in
``keras.ops`` and compiled for the active Keras backend (``model.backend``: TensorFlow by default, JAX or
torch where installed), so evaluation and the detector run the same computation, on the GPU when one is
present. Batches are padded to buckets (powers of two, then multiples of 1,024): the function sees a
bounded set of shapes, never one per micro-batch size.

Besides the score, each row gets an error per *source* feature (a categorical's one-hot block is summed
into its feature), which is what an alert shows an analyst as the reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from core.schema import RecordSchema
from model import backend
from model.preprocessing import UNKNOWN, Preprocessor

MIN_BUCKET = 64
STEP = 1024  # above this, buckets are multiples of it: a 5,000-row batch pads to 5,120, not 8,192


def bucket_size(n: int, max_bucket: int = 1 << 16) -> int:
    """Rows to pad ``n`` to: a power of two up to STEP (at least MIN_BUCKET), then the next multiple of STEP.

    Compiled functions see few shapes (at most ``max_bucket / STEP`` + 5), and padding wastes at most one
    STEP of rows; plain powers of two wasted up to half a batch. Above ``max_bucket`` callers chunk.
    """
    if n > STEP:
        return min(-(-n // STEP) * STEP, max(max_bucket, STEP))
    size = MIN_BUCKET
    while size < n and size < max_bucket:
        size <<= 1
    return size


def bucket_sizes(rows: int, max_bucket: int = 1 << 14) -> list[int]:
    """Every padded size a batch of at most ``rows`` rows is scored at (see :func:`bucket_size`)."""
    return sorted({bucket_size(k, max_bucket) for k in [*(1 << e for e in range(STEP.bit_length())),
                                                      *range(STEP, min(rows, max_bucket) + STEP, STEP)] if k <= rows}
                  | {bucket_size(min(rows, max_bucket), max_bucket)})


@dataclasses.dataclass(frozen=True)
class Scores:
    score: np.ndarray  # (n,) float32
    feature_error: np.ndarray  # (n, features) float32, in the schema's feature order
    reconstruction: np.ndarray  # (n, width) float32, model output


class Scorer:
    """Model + preprocessing compiled into one scoring function."""

    def __init__(self, model: Any, preprocessor: Preprocessor, *, max_bucket: int = 1 << 14) -> None:
        self.model = model
        self.preprocessor = preprocessor
        self.schema = preprocessor.schema
        self.max_bucket = max_bucket
        self.group = _feature_groups(preprocessor)
        self.slots = _slots(self.schema)
        self.width = preprocessor.width
        self.traces = 0
        self._fn = backend.compile_scoring(self._score_graph, len(self.schema.numeric), len(self.schema.categorical))

    def _score_graph(self, numeric: Any, category_ids: Any) -> tuple[Any, Any, Any]:
        from keras import ops

        self.traces += 1  # Python side effect: counts traces where the backend traces (TensorFlow, JAX)
        x = self.preprocessor.transform_ops(numeric, category_ids)
        r = self.model(x, training=False)
        sq = ops.square(r - x)
        return ops.mean(sq, axis=1), ops.matmul(sq, self.group), r

    def score_arrays(self, numeric: np.ndarray, category_ids: np.ndarray) -> Scores:
        """Score rows given raw numerics and category ids (schema order), padding to bucket sizes."""
        n = len(numeric)
        scores, feats, recs = [], [], []
        for start in range(0, max(n, 1), self.max_bucket):
            num = numeric[start : start + self.max_bucket]
            ids = category_ids[start : start + self.max_bucket]
            m = len(num)
            if m == 0:
                break
            size = bucket_size(m, self.max_bucket)
            if size != m:
                num = np.concatenate([num, np.zeros((size - m, num.shape[1]), dtype=num.dtype)])
                ids = np.concatenate([ids, np.zeros((size - m, ids.shape[1]), dtype=ids.dtype)])
            s, f, r = self._fn(num.astype(np.float32, copy=False), ids.astype(np.int32, copy=False))
            scores.append(s[:m])
            feats.append(f[:m])
            recs.append(r[:m])
        if not scores:
            empty = np.zeros((0,), np.float32)
            return Scores(empty, np.zeros((0, self.schema.n_features), np.float32),
                          np.zeros((0, self.width), np.float32))
        return Scores(np.concatenate(scores), np.concatenate(feats), np.concatenate(recs))

    def score_frame(self, features: pd.DataFrame) -> Scores:
        ids, _ = self.preprocessor.encode_categories(features)
        return self.score_arrays(self.preprocessor.numeric_matrix(features).astype(np.float32), ids)

    def explain(
        self, scores: Scores, rows: np.ndarray, features: pd.DataFrame | Mapping[str, np.ndarray], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """Top features by reconstruction error for the given rows, with observed and reconstructed values.

        Vectorised over rows: alerts can be most of a batch during an attack, and this is on the hot path.
        ``features`` holds the observed rows aligned with ``rows`` (a frame, or arrays by feature name).
        """
        if len(rows) == 0:
            return []
        errors = scores.feature_error[rows]
        order = np.argsort(-errors, axis=1, kind="stable")[:, :top]
        top_errors = np.take_along_axis(errors, order, axis=1).astype(np.float64).tolist()
        recon = self.reconstructed_values(scores.reconstruction[rows])
        names = self.schema.names
        observed = _top_values(self.schema, self.slots, features, order)
        rebuilt = _top_values(self.schema, self.slots, recon, order)
        return [[{"feature": names[j], "error": e, "observed": o, "reconstructed": c}
                 for j, e, o, c in zip(js, errs, obs, rec, strict=True)]
                for js, errs, obs, rec in zip(order.tolist(), top_errors, observed, rebuilt, strict=True)]

    def reconstructed_values(self, reconstruction: np.ndarray) -> dict[str, np.ndarray]:
        """Map model outputs (rows x width) back to feature units: undo scaling and log1p; argmax per block."""
        p = self.preprocessor
        lo = np.asarray(p.minimum)
        span = np.asarray(p.maximum) - lo
        span = np.where(span > 0, span, 1.0)
        x = reconstruction[:, : p.n_numeric].astype(np.float64) * span + lo
        x = np.where(np.asarray(p.log_scaled), np.expm1(x), x)
        values: dict[str, np.ndarray] = {name: x[:, j] for j, name in enumerate(p.numeric)}
        offset = p.n_numeric
        for name, size in zip(p.schema.categorical, p.vocab_sizes, strict=True):
            k = np.argmax(reconstruction[:, offset : offset + size], axis=1)
            vocab = np.asarray(list(p.categories[name]) + [UNKNOWN], dtype=object)
            values[name] = vocab[k]
            offset += size
        return values


def _slots(schema: RecordSchema) -> tuple[np.ndarray, np.ndarray]:
    """Per feature (schema order), its column among the numerics and among the categoricals (-1: not one)."""
    num_of = np.full(schema.n_features, -1)
    num_of[[schema.names.index(n) for n in schema.numeric]] = np.arange(len(schema.numeric))
    cat_of = np.full(schema.n_features, -1)
    cat_of[[schema.names.index(n) for n in schema.categorical]] = np.arange(len(schema.categorical))
    return num_of, cat_of


def _top_values(schema: RecordSchema, slots: tuple[np.ndarray, np.ndarray],
                columns: pd.DataFrame | Mapping[str, np.ndarray], order: np.ndarray) -> list[list[Any]]:
    """``columns[names[order[r, t]]][r]`` for every row and rank, JSON-ready: numbers rounded to 6 decimals
    (Python's ``round``, only on the values picked), categories as text. Gathered with numpy, no per-cell
    Python but the rounding."""
    num_of, cat_of = slots
    numeric, categorical = schema.numeric, schema.categorical
    rows = np.arange(len(order))[:, None].repeat(order.shape[1], axis=1)
    out = np.empty(order.shape, dtype=object)
    is_num = num_of[order] >= 0
    if is_num.any():
        mat = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in numeric])
        picked = mat[rows[is_num], num_of[order[is_num]]].tolist()
        out[is_num] = list(map(round, picked, repeat(6)))
    if (~is_num).any():
        mat = np.column_stack([np.asarray(columns[n], dtype=object) for n in categorical])
        out[~is_num] = mat[rows[~is_num], cat_of[order[~is_num]]]
    return out.tolist()


def _feature_groups(p: Preprocessor) -> np.ndarray:
    """``width x features`` 0/1 matrix summing model-input columns into the source feature they came from."""
    names = p.schema.names
    g = np.zeros((p.width, len(names)), dtype=np.float32)
    for j, name in enumerate(p.numeric):
        g[j, names.index(name)] = 1.0
    offset = p.n_numeric
    for name, size in zip(p.schema.categorical, p.vocab_sizes, strict=True):
        g[offset : offset + size, names.index(name)] = 1.0
        offset += size
    return g / p.width  # so that the per-feature errors sum to the row's score
