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
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from training.kdd99 import CATEGORICAL, FEATURES, N_FEATURES, NUMERIC, validate_fields

# Bounded reason codes: metric label values and the ``dlq.reason`` header.
EMPTY = "empty"
OVERSIZED = "oversized"
NOT_UTF8 = "not_utf8"
FIELD_COUNT = "wrong_field_count"
INVALID_VALUE = "invalid_value"
INVALID_JSON = "invalid_json"
REASONS = (EMPTY, OVERSIZED, NOT_UTF8, FIELD_COUNT, INVALID_VALUE, INVALID_JSON)

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
    features: pd.DataFrame  # typed rows, in the order of ``index``
    index: np.ndarray  # batch positions of the parsed rows
    rejections: list[Rejection]


def parse_batch(values: Sequence[bytes | None], max_bytes: int = 16_384) -> ParsedBatch:
    csv_idx: list[int] = []
    json_idx: list[int] = []
    rejections: list[Rejection] = []
    for i, v in enumerate(values):
        if v is not None and len(v) > max_bytes:
            rejections.append(Rejection(i, OVERSIZED, f"{len(v)} bytes exceeds the {max_bytes}-byte limit"))
        elif not v or not v.strip():
            rejections.append(Rejection(i, EMPTY, "empty message"))
        elif v[:1] == b"{":
            json_idx.append(i)
        elif b"\n" in v or b"\r" in v:
            rejections.append(Rejection(i, FIELD_COUNT, "line break inside a CSV record"))
        elif v.count(b",") != N_FEATURES - 1:
            rejections.append(Rejection(i, FIELD_COUNT,
                                        f"expected {N_FEATURES} comma-separated fields, found {v.count(b',') + 1}"))
        else:
            csv_idx.append(i)

    frames: list[pd.DataFrame] = []
    index_parts: list[np.ndarray] = []
    if csv_idx:
        f, ok, rej = _parse_csv(values, csv_idx)
        frames.append(f)
        index_parts.append(ok)
        rejections += rej
    if json_idx:
        f, ok, rej = _parse_json(values, json_idx)
        frames.append(f)
        index_parts.append(ok)
        rejections += rej
    if not frames:
        return ParsedBatch(_empty_frame(), np.zeros(0, dtype=np.int64), rejections)
    features = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    return ParsedBatch(features, np.concatenate(index_parts), rejections)


def _parse_csv(values: Sequence[bytes | None], idx: list[int]) -> tuple[pd.DataFrame, np.ndarray, list[Rejection]]:
    rows = [values[i] for i in idx]
    try:
        table = pacsv.read_csv(pa.py_buffer(b"\n".join(rows)), read_options=_READ, parse_options=_PARSE,
                               convert_options=_CONVERT)  # type: ignore[arg-type]
        if table.num_rows == len(rows):
            frame = pd.DataFrame({name: table.column(name).to_numpy(zero_copy_only=False) for name in FEATURES})
            return _validate(frame, np.asarray(idx, dtype=np.int64))
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
        pass  # something in the batch is not a number or not UTF-8: find out which rows, slowly
    return _parse_csv_slow(rows, idx)


def _parse_csv_slow(rows: list[bytes], idx: list[int]) -> tuple[pd.DataFrame, np.ndarray, list[Rejection]]:
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
        return _empty_frame(), np.zeros(0, dtype=np.int64), rejections
    fields = pd.Series(texts, dtype=object).str.split(",", expand=True)
    frame, ok, rej = _validate(fields, np.asarray(keep, dtype=np.int64))
    return frame, ok, rejections + rej


def _parse_json(values: Sequence[bytes | None], idx: list[int]) -> tuple[pd.DataFrame, np.ndarray, list[Rejection]]:
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
        return _empty_frame(), np.zeros(0, dtype=np.int64), rejections
    frame = pd.DataFrame(records, columns=list(FEATURES), dtype=object)
    for name in NUMERIC:  # numbers arrive as JSON numbers or numeric strings; both are accepted
        frame[name] = frame[name].astype(str)
    out, ok, rej = _validate(frame, np.asarray(keep, dtype=np.int64))
    return out, ok, rejections + rej


def _validate(frame: pd.DataFrame, idx: np.ndarray) -> tuple[pd.DataFrame, np.ndarray, list[Rejection]]:
    features, reasons = validate_fields(frame)
    bad = ~pd.isna(reasons)
    if not bad.any():
        return features, idx, []
    rejections = [Rejection(int(idx[j]), INVALID_VALUE, str(reasons[j])) for j in np.flatnonzero(bad)]
    good = ~bad
    return features.loc[good].reset_index(drop=True), idx[good], rejections


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object if name in CATEGORICAL else float) for name in FEATURES})
