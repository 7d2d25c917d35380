"""Turn a micro-batch of raw Kafka values into typed feature rows, or reasons why not.

The producer sends either the CSV line without its label or a JSON object with the 41 named fields.
Every value ends up in exactly one of two places: a parsed row, or a rejection with a bounded reason code
(for metrics and the dead-letter header) and a detail (for the analyst reading the dead letter).

Hot path: per message only C-level byte checks (size, first byte, comma count, newline); then all CSV
rows of the batch go through Arrow's CSV reader in one call. A batch whose numbers do not all convert
falls back to the pandas path that finds the offending rows; clean batches never pay for it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from itertools import repeat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from training.kdd99 import CATEGORICAL, FEATURES, N_FEATURES, NUMERIC, NUMERIC_MAX, validate_fields

# Bounded reason codes: metric label values and the ``dlq.reason`` header.
EMPTY = "empty"
OVERSIZED = "oversized"
NOT_UTF8 = "not_utf8"
FIELD_COUNT = "wrong_field_count"
INVALID_VALUE = "invalid_value"
INVALID_JSON = "invalid_json"
PARSER_ERROR = "parser_error"  # the parser itself failed on this value: a bug to report, never a crash
REASONS = (EMPTY, OVERSIZED, NOT_UTF8, FIELD_COUNT, INVALID_VALUE, INVALID_JSON, PARSER_ERROR)

log = logging.getLogger(__name__)

_UPPER = np.array([NUMERIC_MAX[name] for name in NUMERIC])
_COLUMN_TYPES = {c: (pa.string() if c in CATEGORICAL else pa.float64()) for c in FEATURES}
_READ = pacsv.ReadOptions(column_names=list(FEATURES), use_threads=False, block_size=1 << 24)
_PARSE = pacsv.ParseOptions(quote_char=False, newlines_in_values=False, ignore_empty_lines=False)
_CONVERT = pacsv.ConvertOptions(column_types=_COLUMN_TYPES, strings_can_be_null=False, quoted_strings_can_be_null=False,
                                null_values=[], check_utf8=True)


@dataclasses.dataclass(frozen=True)
class Rejection:
    index: int  # position in the batch
    code: str
    detail: str


@dataclasses.dataclass(frozen=True)
class ParsedBatch:
    """Parsed rows as arrays (what scoring needs), in the order of ``index`` (their batch positions)."""

    numeric: np.ndarray  # (n, 38) float64, NUMERIC order
    categories: list[np.ndarray]  # 3 object arrays of str, CATEGORICAL order
    index: np.ndarray
    rejections: list[Rejection]

    def columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given rows as arrays by feature name (what an alert's explanation reads; no DataFrame)."""
        cols: dict[str, np.ndarray] = {name: self.numeric[rows, j] for j, name in enumerate(NUMERIC)}
        cols.update({name: self.categories[j][rows] for j, name in enumerate(CATEGORICAL)})
        return cols

    def frame(self, rows: np.ndarray | None = None) -> pd.DataFrame:
        """The rows (all, or the given positions) as a typed frame with the 41 named columns."""
        take = slice(None) if rows is None else rows
        cols: dict[str, np.ndarray] = {name: self.numeric[take, j] for j, name in enumerate(NUMERIC)}
        cols.update({name: self.categories[j][take] for j, name in enumerate(CATEGORICAL)})
        return pd.DataFrame(cols)[list(FEATURES)]


_Part = tuple[np.ndarray, list[np.ndarray], np.ndarray, list[Rejection]]


def parse_batch(values: Sequence[bytes | None], max_bytes: int = 16_384) -> ParsedBatch:
    """Classify every value by whole-batch byte arithmetic, then parse the well-shaped ones in one pass."""
    vals = [v or b"" for v in values]
    n = len(vals)
    lengths = np.fromiter(map(len, vals), dtype=np.int64, count=n)
    # C-level bytes methods mapped over the batch: no Python bytecode per value
    commas = np.fromiter(map(bytes.count, vals, repeat(b",")), dtype=np.int64, count=n)
    breaks = (np.fromiter(map(bytes.find, vals, repeat(b"\n")), dtype=np.int64, count=n) >= 0) | (
        np.fromiter(map(bytes.find, vals, repeat(b"\r")), dtype=np.int64, count=n) >= 0)
    first = np.fromiter(map(bytes.startswith, vals, repeat(b"{")), dtype=bool, count=n)

    rejections: list[Rejection] = []
    csv_idx: list[int] = []
    json_idx: list[int] = []
    ok_csv = (lengths > 0) & (lengths <= max_bytes) & ~first & ~breaks & (commas == N_FEATURES - 1)
    if ok_csv.all():
        csv_idx = list(range(n))
    else:
        for i in range(n):  # only batches holding something odd take this loop
            v = vals[i]
            if ok_csv[i]:
                csv_idx.append(i)
            elif lengths[i] > max_bytes:
                rejections.append(Rejection(i, OVERSIZED, f"{lengths[i]} bytes exceeds the {max_bytes}-byte limit"))
            elif not v.strip():
                rejections.append(Rejection(i, EMPTY, "empty message"))
            elif first[i]:
                json_idx.append(i)
            elif breaks[i]:
                rejections.append(Rejection(i, FIELD_COUNT, "line break inside a CSV record"))
            else:
                rejections.append(Rejection(i, FIELD_COUNT,
                                            f"expected {N_FEATURES} comma-separated fields, found {commas[i] + 1}"))

    parts: list[_Part] = []
    if csv_idx:
        parts.append(_parse_csv(values, csv_idx))
    if json_idx:
        parts.append(_parse_json(values, json_idx))
    for part in parts:
        rejections += part[3]
    parts = [p for p in parts if len(p[2])]
    if not parts:
        return ParsedBatch(np.zeros((0, len(NUMERIC))), [np.zeros(0, dtype=object) for _ in CATEGORICAL],
                           np.zeros(0, dtype=np.int64), rejections)
    if len(parts) == 1:
        numeric, cats, index, _ = parts[0]
    else:
        numeric = np.concatenate([p[0] for p in parts])
        cats = [np.concatenate([p[1][j] for p in parts]) for j in range(len(CATEGORICAL))]
        index = np.concatenate([p[2] for p in parts])
    return ParsedBatch(numeric, cats, index, rejections)


def _parse_csv(values: Sequence[bytes | None], idx: list[int]) -> _Part:
    rows = [values[i] for i in idx]
    try:
        table = pacsv.read_csv(pa.py_buffer(b"\n".join(rows)), read_options=_READ, parse_options=_PARSE,
                               convert_options=_CONVERT)  # type: ignore[arg-type]
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        # something in the batch is not a number or not UTF-8: find out which rows, the slow way
        return _parse_csv_slow(rows, idx)
    if table.num_rows != len(rows):
        return _parse_csv_slow(rows, idx)
    numeric = np.column_stack([table.column(name).to_numpy() for name in NUMERIC]).astype(np.float64, copy=False)
    cats = [pc.utf8_trim_whitespace(table.column(name)).to_numpy(zero_copy_only=False) for name in CATEGORICAL]
    return _check_arrays(numeric, cats, np.asarray(idx, dtype=np.int64))


def _check_arrays(numeric: np.ndarray, cats: list[np.ndarray], idx: np.ndarray) -> _Part:
    """The same rules as ``validate_fields``, in whole-matrix numpy operations for the fast path."""
    with np.errstate(invalid="ignore"):
        bad_cells = ~np.isfinite(numeric) | (numeric < 0) | (numeric > _UPPER)
    bad_cat = np.column_stack([c == "" for c in cats]) if len(idx) else np.zeros((0, len(cats)), bool)
    bad_rows = bad_cells.any(axis=1) | bad_cat.any(axis=1)
    if not bad_rows.any():
        return numeric, cats, idx, []
    rejections = []
    for r in np.flatnonzero(bad_rows):
        rejections.append(Rejection(int(idx[r]), INVALID_VALUE, _first_fault(numeric[r], bad_cat[r])))
    good = ~bad_rows
    return numeric[good], [c[good] for c in cats], idx[good], rejections


def _first_fault(row: np.ndarray, bad_cat: np.ndarray) -> str:
    """The reason ``validate_fields`` would give: the first faulty field in feature order."""
    for name in FEATURES:
        if name in CATEGORICAL:
            if bad_cat[CATEGORICAL.index(name)]:
                return f"empty categorical field {name}"
            continue
        v = row[NUMERIC.index(name)]
        if np.isnan(v):
            return f"non-numeric or NaN value in field {name}"
        if np.isinf(v):
            return f"infinite value in field {name}"
        if v < 0:
            return f"negative value in field {name}"
        if v > NUMERIC_MAX[name]:
            return f"value above {NUMERIC_MAX[name]:g} in field {name}"
    return "invalid value"


def _parse_csv_slow(rows: list[bytes], idx: list[int]) -> _Part:
    texts: list[str] = []
    keep: list[int] = []
    rejections: list[Rejection] = []
    for i, raw in zip(idx, rows, strict=True):
        try:
            texts.append(raw.decode("utf-8"))
            keep.append(i)
        except UnicodeDecodeError as exc:
            rejections.append(Rejection(i, NOT_UTF8, f"not valid UTF-8 at byte {exc.start}"))
    if not texts:
        return _empty(rejections)
    fields = pd.Series(texts, dtype=object).str.split(",", expand=True)
    numeric, cats, ok, rej = _validate(fields, np.asarray(keep, dtype=np.int64))
    return numeric, cats, ok, rejections + rej


def _parse_json(values: Sequence[bytes | None], idx: list[int]) -> _Part:
    records: list[list[object]] = []
    keep: list[int] = []
    rejections: list[Rejection] = []
    for i in idx:
        raw = values[i]
        try:
            obj = json.loads(raw)  # type: ignore[arg-type]
        except UnicodeDecodeError as exc:
            rejections.append(Rejection(i, NOT_UTF8, f"not valid UTF-8 at byte {exc.start}"))
            continue
        except ValueError as exc:
            rejections.append(Rejection(i, INVALID_JSON, f"not JSON: {exc}"))
            continue
        except RecursionError:  # e.g. 10,000 nested '[': json's recursive decoder gives up
            rejections.append(Rejection(i, INVALID_JSON, "JSON nested too deeply"))
            continue
        if not isinstance(obj, dict):
            rejections.append(Rejection(i, INVALID_JSON, f"JSON {type(obj).__name__}, expected an object"))
            continue
        missing = [f for f in FEATURES if f not in obj]
        if missing:
            rejections.append(Rejection(i, INVALID_JSON, f"JSON object lacks {len(missing)} field(s): "
                                        + ", ".join(missing[:5])))
            continue
        row = [obj[f] for f in FEATURES]
        if any(isinstance(v, (dict, list, bool)) or v is None for v in row):
            rejections.append(Rejection(i, INVALID_JSON, "a field holds null, a boolean, a list or an object"))
            continue
        records.append(row)
        keep.append(i)
    if not records:
        return _empty(rejections)
    frame = pd.DataFrame(records, columns=list(FEATURES), dtype=object)
    for name in NUMERIC:  # numbers arrive as JSON numbers or numeric strings; both are accepted
        frame[name] = frame[name].astype(str)
    numeric, cats, ok, rej = _validate(frame, np.asarray(keep, dtype=np.int64))
    return numeric, cats, ok, rejections + rej


def _validate(frame: pd.DataFrame, idx: np.ndarray) -> _Part:
    features, reasons = validate_fields(frame)
    bad = ~pd.isna(reasons)
    rejections = [Rejection(int(idx[j]), INVALID_VALUE, str(reasons[j])) for j in np.flatnonzero(bad)]
    good = features.loc[~bad]
    numeric = good.loc[:, list(NUMERIC)].to_numpy(dtype=np.float64)
    cats = [good[name].to_numpy(dtype=object) for name in CATEGORICAL]
    return numeric, cats, idx[~bad], rejections


def _empty(rejections: list[Rejection]) -> _Part:
    return (np.zeros((0, len(NUMERIC))), [np.zeros(0, dtype=object) for _ in CATEGORICAL],
            np.zeros(0, dtype=np.int64), rejections)


def parse_batch_safe(values: Sequence[bytes | None], max_bytes: int = 16_384) -> ParsedBatch:
    """:func:`parse_batch`, but an input that makes the parser itself raise is dead-lettered, not fatal.

    A poison message that crashed the detector would crash it again after every restart (it is never
    committed), stopping the whole partition. So on an unexpected exception the batch is re-parsed one
    value at a time and each value that still raises becomes a ``parser_error`` rejection.
    """
    try:
        return parse_batch(values, max_bytes)
    except Exception:  # noqa: BLE001 - the point is to survive parser bugs
        log.exception("parser failed on a batch of %d; re-parsing one value at a time", len(values))
    numeric: list[np.ndarray] = []
    cats: list[list[np.ndarray]] = []
    index: list[int] = []
    rejections: list[Rejection] = []
    for i, value in enumerate(values):
        try:
            one = parse_batch([value], max_bytes)
        except Exception as exc:  # noqa: BLE001
            rejections.append(Rejection(i, PARSER_ERROR, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        rejections += [dataclasses.replace(r, index=i) for r in one.rejections]
        if len(one.index):
            numeric.append(one.numeric)
            cats.append(one.categories)
            index.append(i)
    if not index:
        numeric_arr, cat_arrs, _, _ = _empty([])
    else:
        numeric_arr = np.vstack(numeric)
        cat_arrs = [np.concatenate([c[j] for c in cats]) for j in range(len(CATEGORICAL))]
    return ParsedBatch(numeric_arr, cat_arrs, np.asarray(index, dtype=np.int64), rejections)
