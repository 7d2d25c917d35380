"""Feature preprocessing fitted on normal traffic, saved as JSON and applied identically everywhere.

Training and the detector must agree to the last bit on what a row looks like to the model, so there is
one implementation: :meth:`Preprocessor.encode_categories` maps category strings to integer ids (a
dictionary lookup, vectorised with pandas; strings have no business on a GPU) and
:meth:`Preprocessor.transform_ops` does the numeric part in ``keras.ops``, which the detector compiles
into its scoring function on whichever Keras backend runs (TensorFlow, JAX, torch) and training calls
eagerly on whole arrays.

Numeric features the schema marks ``log_scale`` (counts and byte totals: heavy-tailed, src_bytes spans 0
to 7e8) pass through ``log1p`` before min-max scaling; rates and flags are scaled as they are. Scaling uses
the min and max of the normal training rows only; at serving time values are clipped to ``[clip_low, clip_high]`` so a
single absurd field cannot dominate a score. Each categorical gets a one-hot block with one extra slot
for values never seen in training: new services are data, not errors.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.schema import RecordSchema, kdd99

FORMAT = "kdd-preprocessing"
VERSION = 1
UNKNOWN = "<unknown>"

class PreprocessingError(ValueError):
    """The preprocessing artifact is missing, malformed, or does not match this code's feature schema."""


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing state; plain data so it round-trips through JSON exactly (the schema is saved
    beside it in the bundle)."""

    schema: RecordSchema
    numeric: tuple[str, ...]
    log_scaled: tuple[bool, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    categories: Mapping[str, tuple[str, ...]]
    clip_low: float = 0.0
    clip_high: float = 1.0

    # ------------------------------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, features: pd.DataFrame, schema: RecordSchema | None = None, *, clip_low: float = 0.0,
            clip_high: float = 1.0) -> Preprocessor:
        """Fit on normal training rows only: anything else leaks attack statistics into the scaler."""
        schema = schema or kdd99()
        if len(features) == 0:
            raise PreprocessingError("cannot fit preprocessing on zero rows")
        log_flags = schema.log_scaled
        values = _numeric_matrix(features, schema.numeric)
        values = np.where(np.array(log_flags)[None, :], np.log1p(values), values)
        cats = {
            name: tuple(sorted(str(v) for v in pd.unique(features[name].astype(str)))) for name in schema.categorical
        }
        return cls(
            schema=schema,
            numeric=schema.numeric,
            log_scaled=log_flags,
            minimum=tuple(float(v) for v in values.min(axis=0)),
            maximum=tuple(float(v) for v in values.max(axis=0)),
            categories=cats,
            clip_low=clip_low,
            clip_high=clip_high,
        )

    # ------------------------------------------------------------------------------------ geometry
    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """One-hot width per categorical, including its unknown slot (the last one)."""
        return tuple(len(self.categories[name]) + 1 for name in self.schema.categorical)

    @property
    def width(self) -> int:
        """Length of the model's input vector."""
        return self.n_numeric + sum(self.vocab_sizes)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Name of each model input column, for explaining which features a score comes from."""
        names = list(self.numeric)
        for name in self.schema.categorical:
            names += [f"{name}={v}" for v in self.categories[name]] + [f"{name}={UNKNOWN}"]
        return tuple(names)

    # ------------------------------------------------------------------------------------ applying
    def encode_categories(self, features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Category ids (``n x categoricals`` int32) and a per-column count of values that fell in the unknown slot."""
        return self.encode_category_columns([features[name].to_numpy() for name in self.schema.categorical])

    def encode_category_columns(self, columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`encode_categories`, from one array of strings per categorical feature (a hash lookup)."""
        n = len(columns[0]) if columns else 0
        cats = self.schema.categorical
        ids = np.empty((n, len(cats)), dtype=np.int32)
        unknown = np.zeros(len(cats), dtype=np.int64)
        for j, name in enumerate(cats):
            vocab = self.categories[name]
            codes = self._index(name).get_indexer(np.asarray(columns[j], dtype=object)).astype(np.int32)
            missing = codes < 0
            codes[missing] = len(vocab)
            unknown[j] = int(missing.sum())
            ids[:, j] = codes
        return ids, unknown

    def _index(self, name: str) -> pd.Index:
        cache = self.__dict__.setdefault("_index_cache", {})  # frozen dataclass: cache outside the fields
        if name not in cache:
            cache[name] = pd.Index(list(self.categories[name]), dtype=object)
        return cache[name]

    def numeric_matrix(self, features: pd.DataFrame) -> np.ndarray:
        return _numeric_matrix(features, self.numeric)

    def transform_ops(self, numeric: Any, category_ids: Any) -> Any:
        """Model input from raw numerics (``n x numeric`` float32) and category ids (``n x categoricals`` int32).

        Backend-neutral ``keras.ops`` with constants baked in, so it compiles into the detector's scoring
        function on any backend and evaluates identically to training's eager call.
        """
        from keras import ops

        span = np.asarray(self.maximum, dtype=np.float64) - np.asarray(self.minimum, dtype=np.float64)
        # A feature constant on normal traffic keeps unit scale: any deviation from it is a deviation.
        scale = np.where(span > 0, span, 1.0).astype(np.float32)
        lo = np.asarray(self.minimum, dtype=np.float32)
        x = ops.cast(numeric, "float32")
        x = ops.where(np.asarray(self.log_scaled, dtype=bool), ops.log1p(ops.maximum(x, 0.0)), x)
        x = ops.clip((x - lo) / scale, self.clip_low, self.clip_high)
        blocks = [x]
        for j, size in enumerate(self.vocab_sizes):
            blocks.append(ops.one_hot(category_ids[:, j], size, dtype="float32"))
        return ops.concatenate(blocks, axis=1)

    def transform(self, features: pd.DataFrame) -> np.ndarray:
        """Model input for a frame of typed features (training, evaluation): the same ops, run eagerly."""
        from keras import ops

        ids, _ = self.encode_categories(features)
        x = self.transform_ops(self.numeric_matrix(features).astype(np.float32), ids)
        return np.asarray(ops.convert_to_numpy(x))

    # ---------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "features": list(self.schema.names),
            "numeric": list(self.numeric),
            "log_scaled": list(self.log_scaled),
            "minimum": list(self.minimum),
            "maximum": list(self.maximum),
            "categories": {k: list(v) for k, v in self.categories.items()},
            "clip": [self.clip_low, self.clip_high],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], schema: RecordSchema | None = None, *,
                  source: str = "preprocessing") -> Preprocessor:
        schema = schema or kdd99()
        if raw.get("format") != FORMAT:
            raise PreprocessingError(f"{source}: not a preprocessing artifact (format={raw.get('format')!r})")
        if raw.get("version") != VERSION:
            raise PreprocessingError(
                f"{source}: artifact version {raw.get('version')} but this code reads version {VERSION}; "
                "retrain the model with this release"
            )
        if tuple(raw.get("features", ())) != schema.names or tuple(raw.get("numeric", ())) != schema.numeric:
            raise PreprocessingError(f"{source}: feature order differs from the record schema {schema.name!r}")
        try:
            n = len(schema.numeric)
            minimum = tuple(float(v) for v in raw["minimum"])
            maximum = tuple(float(v) for v in raw["maximum"])
            log_scaled = tuple(bool(v) for v in raw["log_scaled"])
            if not (len(minimum) == len(maximum) == len(log_scaled) == n):
                raise PreprocessingError(f"{source}: expected {n} numeric statistics")
            cats = {name: tuple(str(v) for v in raw["categories"][name]) for name in schema.categorical}
            clip_low, clip_high = (float(v) for v in raw["clip"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PreprocessingError(f"{source}: malformed artifact ({exc!r})") from exc
        return cls(schema, schema.numeric, log_scaled, minimum, maximum, cats, clip_low, clip_high)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path, schema: RecordSchema | None = None) -> Preprocessor:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PreprocessingError(f"cannot read preprocessing artifact {path}: {exc}") from exc
        return cls.from_dict(raw, schema, source=str(path))


def _numeric_matrix(features: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    return features.loc[:, list(names)].to_numpy(dtype=np.float64)
