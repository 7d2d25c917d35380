"""The record schema as a value: which features a connection record has, their kinds and value rules.

Training fits on it, the producer reads files with it, the detector parses the wire with it, and the
bundle carries the one it was trained on, so a new data set of connection records is a schema file, not
an edit across packages. KDD99 and NSL-KDD ship as ``core/schemas/*.json``.

The value rules are one table (per numeric feature: a lower and an upper bound; per categorical: not
empty) applied by :meth:`RecordSchema.faults`, the only place that decides whether a typed row is
acceptable. The file reader and the detector's vectorised parser both call it, so they cannot disagree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FLOAT32_MAX = float(np.finfo(np.float32).max)  # scoring runs in float32: a larger value would become inf
SCHEMA_DIR = Path(__file__).with_name("schemas")
NUMERIC, CATEGORICAL = "numeric", "categorical"
UNKNOWN_FAMILY = "unknown"
_LABEL_RE = re.compile(r"[a-z0-9_\-]+")


class SchemaError(ValueError):
    """A schema file is missing or malformed; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    kind: str  # NUMERIC or CATEGORICAL
    minimum: float = 0.0
    maximum: float = FLOAT32_MAX
    log_scale: bool = False  # heavy-tailed counts: log1p before min-max scaling

    def to_dict(self) -> dict[str, Any]:
        if self.kind == CATEGORICAL:
            return {"name": self.name, "kind": self.kind}
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "max": "float32" if self.maximum == FLOAT32_MAX else self.maximum}
        if self.minimum != 0.0:
            out["min"] = self.minimum
        if self.log_scale:
            out["log_scale"] = True
        return out


@dataclasses.dataclass(frozen=True)
class LabelSpec:
    """The label column: what counts as normal, attack families (evaluation only), ignored trailing fields."""

    normal: str = "normal"
    trailing_fields: tuple[str, ...] = ()
    families: Mapping[str, str] = dataclasses.field(default_factory=dict)  # label -> family
    column: str | None = None  # files with a header row: the label's column, by name


@dataclasses.dataclass(frozen=True)
class RecordSchema:
    name: str
    features: tuple[Feature, ...]
    label: LabelSpec = dataclasses.field(default_factory=LabelSpec)
    description: str = ""
    header: bool = False  # files begin with a header row: columns are found by name, in any order
    preset: str = "default"  # the model preset training uses for this data set unless told otherwise
    ignore: tuple[str, ...] = ()  # header columns that are neither features nor the label (a row number, ...)
    zeek_conn: bool = False  # files are Zeek conn.logs, featurized by core.featurizer (core.zeek_records)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise SchemaError(f"schema {self.name}: duplicate feature names")
        if self.header and self.label.column in names:
            raise SchemaError(f"schema {self.name}: the label column {self.label.column!r} is also a feature")
        if not any(f.kind == NUMERIC for f in self.features):
            raise SchemaError(f"schema {self.name}: needs at least one numeric feature")

    # ---------------------------------------------------- geometry (cached: read per batch and per alert)
    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @functools.cached_property
    def numeric(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == NUMERIC)

    @functools.cached_property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.kind == CATEGORICAL)

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def log_scaled(self) -> tuple[bool, ...]:
        return tuple(f.log_scale for f in self.features if f.kind == NUMERIC)

    @property
    def field_counts(self) -> tuple[int, ...]:
        """Accepted comma-separated field counts of a file line: features only, + label, + trailing fields."""
        n = self.n_features
        return (n, n + 1, *(n + 1 + k for k in range(1, len(self.label.trailing_fields) + 1)))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound per numeric feature, in :attr:`numeric` order."""
        num = [f for f in self.features if f.kind == NUMERIC]
        return np.array([f.minimum for f in num]), np.array([f.maximum for f in num])

    # -------------------------------------------------------------------------------------- rules
    def faults(self, numeric: np.ndarray, categories: Sequence[np.ndarray], *,
               empty_categories: bool | None = None) -> np.ndarray:
        """Per row, ``None`` when acceptable, else the first faulty field in feature order and what is wrong.

        ``numeric`` is ``n x len(numeric)`` float64 (NaN where text did not parse as a number);
        ``categories`` one array of stripped strings per categorical feature. Whole-matrix numpy: this runs
        on every micro-batch and on every file read. ``empty_categories``: whether any category is empty, when
        the caller already knows (a dictionary-encoded column answers from its few distinct values).
        """
        n = len(numeric)
        lo, hi = self.bounds()
        with np.errstate(invalid="ignore"):
            in_bounds = (numeric >= lo) & (numeric <= hi)  # False for NaN; with finite bounds, for infinities
        empty_category = (any((np.asarray(c, dtype=object) == "").any() for c in categories)
                          if empty_categories is None else empty_categories)
        if np.isfinite(hi).all() and in_bounds.all() and not empty_category:
            return np.full(n, None, dtype=object)  # the common batch: one pass, no per-cell codes
        code = np.zeros((n, self.n_features), dtype=np.int8)  # 0 ok, else an index into _MESSAGES
        num_pos = [i for i, f in enumerate(self.features) if f.kind == NUMERIC]
        cat_pos = [i for i, f in enumerate(self.features) if f.kind == CATEGORICAL]
        with np.errstate(invalid="ignore"):
            cells = np.select([np.isnan(numeric), np.isinf(numeric), numeric < lo, numeric > hi], [1, 2, 3, 4], 0)
        code[:, num_pos] = cells
        for j, pos in enumerate(cat_pos):
            code[:, pos] = np.where(np.asarray(categories[j], dtype=object) == "", 5, 0)
        reasons = np.full(n, None, dtype=object)
        bad = np.flatnonzero(code.any(axis=1))
        if len(bad):
            first = np.argmax(code[bad] != 0, axis=1)
            for row, col in zip(bad, first, strict=True):
                reasons[row] = self._message(int(code[row, col]), self.features[col])
        return reasons

    @staticmethod
    def _message(code: int, f: Feature) -> str:
        if code == 1:
            return f"non-numeric or NaN value in field {f.name}"
        if code == 2:
            return f"infinite value in field {f.name}"
        if code == 3:
            if f.minimum == 0:
                return f"negative value in field {f.name}"
            return f"value below {f.minimum:g} in field {f.name}"
        if code == 4:
            return f"value above {f.maximum:g} in field {f.name}"
        return f"empty categorical field {f.name}"

    # ------------------------------------------------------------------------------------- labels
    @staticmethod
    def normalize_label(raw: str) -> str:
        """``'smurf.'`` (KDD99) and ``'smurf'`` (NSL-KDD) name the same class."""
        return raw.strip().rstrip(".").lower()

    @staticmethod
    def label_ok(labels: pd.Series) -> np.ndarray:
        return labels.str.fullmatch(_LABEL_RE.pattern).to_numpy(dtype=bool)

    def is_attack(self, labels: pd.Series | np.ndarray) -> np.ndarray:
        return np.asarray(pd.Series(labels).astype(str) != self.label.normal)

    def family(self, label: str) -> str:
        """Family of a normalised label: normal, a family from the schema, or ``unknown`` for a new name."""
        if label == self.label.normal:
            return label
        return self.label.families.get(label, UNKNOWN_FAMILY)

    # ---------------------------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        families: dict[str, list[str]] = {}
        for label, family in self.label.families.items():
            families.setdefault(family, []).append(label)
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.preset != "default":
            out["preset"] = self.preset
        if self.header:
            out["format"] = {"header": True, "ignore": list(self.ignore)}
        if self.zeek_conn:
            out["format"] = {"zeek_conn": True}
        label: dict[str, Any] = {"normal": self.label.normal, "trailing_fields": list(self.label.trailing_fields),
                                 "families": families}
        if self.label.column is not None:
            label["column"] = self.label.column
        return out | {"features": [f.to_dict() for f in self.features], "label": label}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, source: str = "schema") -> RecordSchema:
        try:
            feats = tuple(_feature(f) for f in raw["features"])
            lab = raw.get("label", {})
            families = {str(a): str(fam) for fam, labels in lab.get("families", {}).items() for a in labels}
            column = lab.get("column")
            label = LabelSpec(str(lab.get("normal", "normal")), tuple(lab.get("trailing_fields", ())), families,
                              None if column is None else str(column))
            fmt = raw.get("format", {})
            return cls(str(raw["name"]), feats, label, str(raw.get("description", "")),
                       header=bool(fmt.get("header", False)), ignore=tuple(str(c) for c in fmt.get("ignore", ())),
                       preset=str(raw.get("preset", "default")), zeek_conn=bool(fmt.get("zeek_conn", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"{source}: not a record schema ({exc!r}); see core/schemas/kdd99.json") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> RecordSchema:
        """A schema file by path, or a shipped one by name (``kdd99``, ``nsl_kdd``)."""
        p = Path(path)
        if not p.exists() and (SCHEMA_DIR / f"{path}.json").exists():
            p = SCHEMA_DIR / f"{path}.json"
        try:
            raw = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            shipped = ", ".join(sorted(q.stem for q in SCHEMA_DIR.glob("*.json")))
            raise SchemaError(f"cannot read record schema {path} ({exc}); pass a schema file or one of: "
                              f"{shipped}") from exc
        return cls.from_dict(raw, source=str(p))


def _feature(raw: Mapping[str, Any]) -> Feature:
    kind = str(raw["kind"])
    if kind not in (NUMERIC, CATEGORICAL):
        raise ValueError(f"feature {raw.get('name')!r}: kind must be numeric or categorical, not {kind!r}")
    maximum = raw.get("max", "float32")
    return Feature(name=str(raw["name"]), kind=kind, minimum=float(raw.get("min", 0.0)),
                   maximum=FLOAT32_MAX if maximum == "float32" else min(float(maximum), FLOAT32_MAX),
                   log_scale=bool(raw.get("log_scale", False)))


def kdd99() -> RecordSchema:
    """The KDD Cup 99 schema (the default for files and for bundles that predate schema files)."""
    return _shipped("kdd99")


_CACHE: dict[str, RecordSchema] = {}


def _shipped(name: str) -> RecordSchema:
    if name not in _CACHE:
        _CACHE[name] = RecordSchema.load(SCHEMA_DIR / f"{name}.json")
    return _CACHE[name]
