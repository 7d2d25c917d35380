"""The wire format of a connection record on Kafka, written once: encoding a record (key, value, headers) as the
producer sends it, reading its id and label back from a message, and parsing a micro-batch of values into
typed feature rows or reasons why not. The producer, the detector, retraining from a topic and the test kit
all go through it, so they agree on what a record is (a CSV record that carries its label is one, for all).

The producer sends either the CSV line without its label or a JSON object with the named fields (the
record schema comes from the model bundle); the key and the ``record_id`` header carry the record's id,
the ``label`` header its label when the source has one (evaluation only). Every value ends up in exactly one
of two places: a parsed row, or a rejection with a bounded reason code (for metrics and the dead-letter
header) and a detail (for the analyst reading the dead letter).

Hot path: the batch is joined once and read by Arrow's CSV reader in one call, after checks over the
whole batch (line breaks, sizes); Arrow itself refuses any row with the wrong field count. Only a batch
holding something else (JSON, a label, an empty or oversized value, a line break) is classified value by
value, and one whose numbers do not all convert falls back to ``core.records``' pandas splitter, which
finds the offending rows; clean batches never pay for either. Either way the value rules are the
schema's (:meth:`core.schema.RecordSchema.faults`).
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

from core import headers as h
from core.records import split_fields, typed_fields
from core.schema import RecordSchema

Header = tuple[str, bytes]

# Bounded reason codes: metric label values and the ``dlq.reason`` header.
EMPTY = "empty"
OVERSIZED = "oversized"
NOT_UTF8 = "not_utf8"
FIELD_COUNT = "wrong_field_count"
INVALID_VALUE = "invalid_value"
INVALID_JSON = "invalid_json"
PARSER_ERROR = "parser_error"  # the parser itself failed on this value: a bug to report, never a crash
BAD_HEADER = "bad_header"  # the record's headers could not be read (core.kafka_io.read_headers)
REASONS = (EMPTY, OVERSIZED, NOT_UTF8, FIELD_COUNT, INVALID_VALUE, INVALID_JSON, PARSER_ERROR, BAD_HEADER)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ envelope
def encode(record_id: int | str, value: bytes, label: str | None = None) -> tuple[bytes, bytes, list[Header]]:
    """A record as the producer sends it: (key, value, headers). The key is the record id (partitioning
    keeps one source row on one partition across replays); ``label``, when given, travels as a header."""
    key = str(record_id).encode()
    out: list[Header] = [(h.RECORD_ID, key)]
    if label is not None:
        out.append((h.LABEL, label.encode()))
    return key, value, out


def record_id(headers: Sequence[tuple[str, bytes | None]] | None, key: bytes | None) -> str | None:
    """A message's record id: its ``record_id`` header, else its key when that is text."""
    found = h.header(headers, h.RECORD_ID)
    if found is None and key is not None:
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return found


def label(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """A message's label header (evaluation only), or None."""
    return h.header(headers, h.LABEL)


# -------------------------------------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True)
class Rejection:
    index: int  # position in the batch
    code: str
    detail: str


@dataclasses.dataclass(frozen=True)
class ParsedBatch:
    """Parsed rows as arrays (what scoring needs), in the order of ``index`` (their batch positions)."""

    schema: RecordSchema
    numeric: np.ndarray  # (n, numeric features) float64, schema order
    categories: list[np.ndarray]  # one object array of str per categorical feature, schema order
    index: np.ndarray
    rejections: list[Rejection]
    trimmed: int = 0  # CSV records that came with a label (and trailing fields): accepted, the label ignored

    def columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The given rows as arrays by feature name (what an alert's explanation reads; no DataFrame)."""
        cols: dict[str, np.ndarray] = {name: self.numeric[rows, j] for j, name in enumerate(self.schema.numeric)}
        cols.update({name: self.categories[j][rows] for j, name in enumerate(self.schema.categorical)})
        return cols


_Part = tuple[np.ndarray, list[np.ndarray], np.ndarray, list[Rejection]]


def _unreadable(parser: Parser, values: Sequence[bytes | None], unreadable: Sequence[int]) -> ParsedBatch:
    """Parse a batch whose records at ``unreadable`` have headers the client could not read
    (``core.kafka_io.read_headers``): each is a ``bad_header`` rejection whatever its value, never scored."""
    values = list(values)
    for i in unreadable:
        values[i] = None  # rejected as empty, then renamed below
    parsed = parser.parse_safe(values)
    bad = set(unreadable)
    parsed.rejections[:] = [dataclasses.replace(r, code=BAD_HEADER, detail="a header key is not valid UTF-8 (sent "
                                                "by a non-librdkafka client?); the record is kept here whole")
                            if r.index in bad else r for r in parsed.rejections]
    return parsed


class Parser:
    """Parses batches of one schema; the Arrow reader options are built once, not per batch."""

    def __init__(self, schema: RecordSchema, max_bytes: int = 16_384) -> None:
        self.schema = schema
        self.max_bytes = max_bytes
        # categoricals dictionary-encoded by the reader: a batch holds a few dozen distinct services, so strings
        # are made (and trimmed) once per distinct value, not once per row
        cat_type = pa.dictionary(pa.int32(), pa.string())
        types = {f.name: (cat_type if f.kind == "categorical" else pa.float64()) for f in schema.features}
        self._read = pacsv.ReadOptions(column_names=list(schema.names), use_threads=False, block_size=1 << 24)
        self._parse = pacsv.ParseOptions(quote_char=False, newlines_in_values=False, ignore_empty_lines=False)
        self._convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                             quoted_strings_can_be_null=False, null_values=[], check_utf8=True)

    def parse(self, values: Sequence[bytes | None]) -> ParsedBatch:
        """Classify every value by whole-batch byte arithmetic, then parse the well-shaped ones in one pass.

        A trailing CR/LF is not part of a record (other producers send lines as they read them), and a whole
        file line with its label (and NSL-KDD's difficulty) is accepted with the label cut off: labels are
        never scored. Both are common from other replay tools; neither is an error.
        """
        plain = self._plain_csv(values)
        if plain is not None:
            return self._batch(plain, plain[3])
        vals, csv_idx, json_idx, rejections, trimmed = self._classify(values)
        parts: list[_Part] = []
        if csv_idx:
            parts.append(self._parse_csv(vals, csv_idx))
        if json_idx:
            parts.append(self._parse_json(vals, json_idx))
        for part in parts:
            rejections += part[3]
        parts = [p for p in parts if len(p[2])]
        if not parts:
            return self._batch(self._empty([]), rejections, trimmed)
        if len(parts) == 1:
            return self._batch(parts[0], rejections, trimmed)
        n_cat = len(self.schema.categorical)
        merged = (np.concatenate([p[0] for p in parts]),
                  [np.concatenate([p[1][j] for p in parts]) for j in range(n_cat)],
                  np.concatenate([p[2] for p in parts]), [])
        return self._batch(merged, rejections, trimmed)

    def _batch(self, part: _Part, rejections: list[Rejection], trimmed: int = 0) -> ParsedBatch:
        return ParsedBatch(self.schema, part[0], part[1], part[2], rejections, trimmed)

    def _plain_csv(self, values: Sequence[bytes | None]) -> _Part | None:
        """The common batch, in a handful of C-level passes: every value a CSV line of the right size, without
        line breaks, that Arrow reads with exactly the schema's columns (Arrow rejects any row with another
        field count, so a JSON object or a short line sends the batch to the classifying path). None: some
        value is not, and the caller classifies value by value."""
        n = len(values)
        if n == 0:
            return None
        try:
            joined = b"\n".join(values)  # type: ignore[arg-type]  # a None raises TypeError: not plain
        except TypeError:
            return None
        if joined.count(b"\n") != n - 1 or b"\r" in joined:
            return None
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)  # type: ignore[arg-type]
        if lengths.min() == 0 or lengths.max() > self.max_bytes:
            return None
        table = self._read_csv(joined)
        if table is None or table.num_rows != n:
            return None
        return self._from_table(table, np.arange(n, dtype=np.int64))

    def _read_csv(self, joined: bytes) -> pa.Table | None:
        try:
            return pacsv.read_csv(pa.py_buffer(joined), read_options=self._read, parse_options=self._parse,
                                  convert_options=self._convert)
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError):
            return None  # something is not a number, not UTF-8 or not the right field count

    def _from_table(self, table: pa.Table, idx: np.ndarray) -> _Part:
        # (features, rows) contiguous, then transposed: one copy per column instead of column_stack's two
        numeric = np.stack([table.column(name).to_numpy() for name in self.schema.numeric]).T
        if table.num_rows and table.column(0).num_chunks > 1:  # batches over block_size: one dictionary for all
            table = table.unify_dictionaries()
        cats: list[np.ndarray] = []
        empty = False
        for name in self.schema.categorical:
            chunks = table.column(name).chunks
            if not chunks:
                cats.append(np.zeros(0, dtype=object))
                continue
            vocab = pc.utf8_trim_whitespace(chunks[0].dictionary).to_numpy(zero_copy_only=False)
            codes = np.concatenate([c.indices.to_numpy() for c in chunks]) if len(chunks) > 1 \
                else chunks[0].indices.to_numpy()
            cats.append(vocab[codes])  # pointers to the distinct strings: no string built per row
            empty = empty or bool((vocab == "").any())
        return self._keep_valid(numeric, cats, idx, self.schema.faults(numeric, cats, empty_categories=empty))

    def _classify(self, values: Sequence[bytes | None]
                  ) -> tuple[list[bytes], list[int], list[int], list[Rejection], int]:
        vals = list(map(bytes.rstrip, [v or b"" for v in values], repeat(b"\r\n")))  # C-level, per value
        n = len(vals)
        n_features = self.schema.n_features
        lengths = np.fromiter(map(len, vals), dtype=np.int64, count=n)
        # C-level bytes methods mapped over the batch: no Python bytecode per value
        commas = np.fromiter(map(bytes.count, vals, repeat(b",")), dtype=np.int64, count=n)
        breaks = (np.fromiter(map(bytes.find, vals, repeat(b"\n")), dtype=np.int64, count=n) >= 0) | (
            np.fromiter(map(bytes.find, vals, repeat(b"\r")), dtype=np.int64, count=n) >= 0)
        first = np.fromiter(map(bytes.startswith, vals, repeat(b"{")), dtype=bool, count=n)
        shaped = (lengths > 0) & (lengths <= self.max_bytes) & ~first & ~breaks
        ok_csv = shaped & (commas == n_features - 1)
        if ok_csv.all():
            return vals, list(range(n)), [], [], 0
        extra = commas - (n_features - 1)  # fields after the features: a label, then the schema's trailing ones
        labelled = shaped & np.isin(extra, np.arange(1, len(self.schema.label.trailing_fields) + 2))
        csv_idx: list[int] = []
        json_idx: list[int] = []
        rejections: list[Rejection] = []
        trimmed = 0
        for i in range(n):  # only batches holding something odd take this loop
            v = vals[i]
            if ok_csv[i]:
                csv_idx.append(i)
            elif labelled[i]:
                vals[i] = v.rsplit(b",", int(extra[i]))[0]
                csv_idx.append(i)
                trimmed += 1
            elif lengths[i] > self.max_bytes:
                rejections.append(Rejection(i, OVERSIZED,
                                            f"{lengths[i]} bytes exceeds the {self.max_bytes}-byte limit"))
            elif not v.strip():
                rejections.append(Rejection(i, EMPTY, "empty message"))
            elif first[i]:
                json_idx.append(i)
            elif breaks[i]:
                rejections.append(Rejection(i, FIELD_COUNT, "line break inside a CSV record"))
            else:
                rejections.append(Rejection(i, FIELD_COUNT,
                                            f"expected {n_features} comma-separated fields, found {commas[i] + 1}"))
        return vals, csv_idx, json_idx, rejections, trimmed

    def _parse_csv(self, values: Sequence[bytes | None], idx: list[int]) -> _Part:
        rows = [values[i] or b"" for i in idx]
        table = self._read_csv(b"\n".join(rows))
        if table is None or table.num_rows != len(rows):
            # something in the batch is not a number or not UTF-8: find out which rows, the slow way
            return self._parse_csv_slow(rows, idx)
        return self._from_table(table, np.asarray(idx, dtype=np.int64))

    def _parse_csv_slow(self, rows: list[bytes], idx: list[int]) -> _Part:
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
            return self._empty(rejections)
        numeric, cats, faults = typed_fields(self.schema, split_fields(texts, self.schema.n_features, self.schema))
        numeric_k, cats_k, ok, rej = self._keep_valid(numeric, cats, np.asarray(keep, dtype=np.int64), faults)
        return numeric_k, cats_k, ok, rejections + rej

    def _parse_json(self, values: Sequence[bytes | None], idx: list[int]) -> _Part:
        names = self.schema.names
        records: list[list[object]] = []
        keep: list[int] = []
        rejections: list[Rejection] = []
        for i in idx:
            obj, problem = _json_object(values[i] or b"")
            if problem is not None:
                rejections.append(Rejection(i, *problem))
                continue
            missing = [f for f in names if f not in obj]
            if missing:
                rejections.append(Rejection(i, INVALID_JSON, f"JSON object lacks {len(missing)} field(s): "
                                            + ", ".join(missing[:5])))
                continue
            row = [obj[f] for f in names]
            if any(isinstance(v, (dict, list, bool)) or v is None for v in row):
                rejections.append(Rejection(i, INVALID_JSON, "a field holds null, a boolean, a list or an object"))
                continue
            records.append(row)
            keep.append(i)
        if not records:
            return self._empty(rejections)
        frame = pd.DataFrame(records, columns=list(names), dtype=object)
        for name in self.schema.numeric:  # numbers arrive as JSON numbers or numeric strings; both are accepted
            frame[name] = frame[name].astype(str)
        numeric, cats, faults = typed_fields(self.schema, frame)
        numeric_k, cats_k, ok, rej = self._keep_valid(numeric, cats, np.asarray(keep, dtype=np.int64), faults)
        return numeric_k, cats_k, ok, rejections + rej

    @staticmethod
    def _keep_valid(numeric: np.ndarray, cats: list[np.ndarray], idx: np.ndarray, faults: np.ndarray) -> _Part:
        bad = faults.astype(bool)  # None or a non-empty reason: truthiness in C, no per-row Python
        if not bad.any():
            return numeric, cats, idx, []
        rejections = [Rejection(int(idx[j]), INVALID_VALUE, str(faults[j])) for j in np.flatnonzero(bad)]
        good = ~bad
        return numeric[good], [c[good] for c in cats], idx[good], rejections

    def _empty(self, rejections: list[Rejection]) -> _Part:
        return (np.zeros((0, len(self.schema.numeric))), [np.zeros(0, dtype=object) for _ in self.schema.categorical],
                np.zeros(0, dtype=np.int64), rejections)

    def parse_safe(self, values: Sequence[bytes | None], unreadable: Sequence[int] = ()) -> ParsedBatch:
        """:meth:`parse`, but an input that makes the parser itself raise is dead-lettered, not fatal.

        A poison message that crashed the detector would crash it again after every restart (it is never
        committed), stopping the whole partition. So on an unexpected exception the batch is re-parsed one
        value at a time and each value that still raises becomes a ``parser_error`` rejection.

        ``unreadable``: positions of records whose headers the client could not read (:func:`_unreadable`).
        """
        if unreadable:
            return _unreadable(self, values, unreadable)
        try:
            return self.parse(values)
        except Exception:  # noqa: BLE001 - the point is to survive parser bugs
            log.exception("parser failed on a batch of %d; re-parsing one value at a time", len(values))
        numeric: list[np.ndarray] = []
        cats: list[list[np.ndarray]] = []
        index: list[int] = []
        rejections: list[Rejection] = []
        trimmed = 0
        for i, value in enumerate(values):
            try:
                one = self.parse([value])
            except Exception as exc:  # noqa: BLE001
                rejections.append(Rejection(i, PARSER_ERROR, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            rejections += [dataclasses.replace(r, index=i) for r in one.rejections]
            trimmed += one.trimmed
            if len(one.index):
                numeric.append(one.numeric)
                cats.append(one.categories)
                index.append(i)
        if not index:
            return self._batch(self._empty([]), rejections, trimmed)
        cat_arrs = [np.concatenate([c[j] for c in cats]) for j in range(len(self.schema.categorical))]
        return ParsedBatch(self.schema, np.vstack(numeric), cat_arrs, np.asarray(index, dtype=np.int64), rejections,
                           trimmed)


def _json_object(raw: bytes) -> tuple[dict[str, object], tuple[str, str] | None]:
    """The decoded object, or a (reason code, detail) saying why the value is not one."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as exc:
        return {}, (NOT_UTF8, f"not valid UTF-8 at byte {exc.start}")
    except ValueError as exc:
        return {}, (INVALID_JSON, f"not JSON: {exc}")
    except RecursionError:  # e.g. 10,000 nested '[': json's recursive decoder gives up
        return {}, (INVALID_JSON, "JSON nested too deeply")
    if not isinstance(obj, dict):
        return {}, (INVALID_JSON, f"JSON {type(obj).__name__}, expected an object")
    return obj, None
