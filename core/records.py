"""Reading connection-record files (KDD99, NSL-KDD or any schema): valid rows, and why the others are not.

The producer replays these rows and training fits on them; both need the same answer to "is this line a
record", so the reader lives here, below both. It imports only numpy and pandas: the producer must not
pay for TensorFlow to read a file.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.datasets import DATA_ENV, KDD99_10, cache_dir, shared_path
from core.schema import RecordSchema, kdd99


class RecordFormatError(ValueError):
    """A file or record does not fit its schema; the message names where and what."""


BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where a header-row file keeps each feature and the label: the header's column count, and per feature (in
    schema order, then the label when the file has it) its column index. Lines are rearranged into the schema's
    order, so everything after the reader (validation, the producer's payload, the wire) is as for KDD99."""

    count: int
    order: tuple[int, ...]
    labelled: bool

    @classmethod
    def of(cls, header: bytes, schema: RecordSchema, source: str) -> Columns:
        names = [c.strip().strip('"') for c in header.removeprefix(BOM).decode("utf-8", "replace").split(",")]
        index = {n: i for i, n in enumerate(names)}
        missing = [f for f in schema.names if f not in index]
        if missing:
            raise RecordFormatError(
                f"{source}: the header row has no column {', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''} of schema {schema.name}; its columns are "
                f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''} (is it the right --schema?)")
        # columns that are neither features nor the label (``ignore``, or extras some copies carry) are left out
        order = [index[f] for f in schema.names]
        labelled = schema.label.column is not None and schema.label.column in index
        if labelled:
            order.append(index[schema.label.column])  # type: ignore[index]
        return cls(len(names), tuple(order), labelled)

    def arrange(self, text: str) -> str | None:
        """The line's features in schema order (then its label); None when it has not the header's column count."""
        fields = text.split(",")
        if len(fields) != self.count:
            return None
        return ",".join(fields[i] for i in self.order)

    def arrange_all(self, text: list[str], reasons: np.ndarray) -> None:
        """Arrange every line in place; a line without the header's column count gets its reason instead."""
        for j, t in enumerate(text):
            arranged = self.arrange(t) if t.strip() else t
            if arranged is None:
                found = t.count(",") + 1
                reasons[j] = f"expected {self.count} comma-separated fields (as the header row), found {found}"
            else:
                text[j] = arranged


MAX_LINE_CHARS = 64 * 1024  # a data line longer than this is malformed, whatever its fields


def default_data_path() -> Path:
    """The path in the data variable (:data:`DATA_ENV`) if set, else the shared 10% file beside the repository,
    else the copy ``python -m core.datasets`` fetched into the cache (the shared path when neither exists, so
    the error names where it was looked for)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    cached = cache_dir() / KDD99_10.filename
    return cached if not shared_path().exists() and cached.exists() else shared_path()


@dataclasses.dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Records:
    """Valid rows of one file, with where they came from (``line`` is 1-based, the record id is line-1)."""

    source: str
    schema: RecordSchema
    features: pd.DataFrame
    labels: pd.Series | None
    lines: np.ndarray
    raw: pd.Series | None
    rejected: tuple[Rejected, ...]
    n_fields: int  # fields per line in this file: features, + label, + trailing fields

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def record_ids(self) -> np.ndarray:
        """Stable id of a row: its 0-based position in the file, so alerts trace back to a source line."""
        return self.lines - 1

    @property
    def is_attack(self) -> np.ndarray:
        if self.labels is None:
            raise RecordFormatError(f"{self.source} has no labels; evaluation needs a labelled file")
        return self.schema.is_attack(self.labels)

    def families(self) -> np.ndarray:
        if self.labels is None:
            raise RecordFormatError(f"{self.source} has no labels")
        return np.array([self.schema.family(label) for label in self.labels], dtype=object)

    def payload(self, line: str) -> str:
        """The feature fields of a source line: what the producer sends, so the detector never sees labels."""
        extra = self.n_fields - self.schema.n_features
        return line.rsplit(",", extra)[0] if extra else line


def open_text_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Raw lines of a gzip or plain file (by magic bytes, not by name), without line terminators."""
    p = Path(path)
    if not p.exists():
        raise RecordFormatError(
            f"data file {p} does not exist; pass --data PATH or set {DATA_ENV} to a KDD99 or NSL-KDD file "
            "(`python -m core.datasets` fetches the KDD99 10% file and prints its path)"
        )
    if p.is_dir():
        raise RecordFormatError(f"data path {p} is a directory; pass the file itself")
    with open(p, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(p, "rb") as fh:  # type: ignore[operator]
        try:
            for raw in fh:
                yield raw.rstrip(b"\r\n")
        except (OSError, EOFError) as exc:
            raise RecordFormatError(f"{p}: cannot be read to the end ({exc}); is the file truncated?") from exc


def read_records(
    path: str | os.PathLike[str] | None = None, *, schema: RecordSchema | None = None, limit: int | None = None,
    strict: bool = True, keep_raw: bool = False,
) -> Records:
    """Read a file of ``schema`` records (default KDD99) from any path, labelled or not.

    ``strict`` raises :class:`RecordFormatError` on the first bad line with its line number and reason
    (what training wants: a bad file must not silently shrink a training set); otherwise bad lines are
    returned in ``rejected`` (what the producer wants: count them, never send them). ``limit`` counts
    lines read, so record ids stay file positions. ``keep_raw`` keeps each valid line's text.
    """
    path = Path(path) if path is not None else default_data_path()
    schema = schema or kdd99()
    if schema.zeek_conn:
        from core.zeek_records import read_zeek_records

        return read_zeek_records(path, schema, strict=strict, limit=limit)
    raw_lines: list[bytes] = []
    lines = open_text_lines(path)
    columns = _header(lines, schema, str(path))
    for i, line in enumerate(lines):
        if limit is not None and i >= limit:
            break
        raw_lines.append(line)
    return parse_lines(raw_lines, source=str(path), schema=schema, strict=strict, keep_raw=keep_raw,
                       first_line=2 if columns else 1, columns=columns)


def _header(lines: Iterator[bytes], schema: RecordSchema, source: str) -> Columns | None:
    """For a schema whose files have a header row: read it off ``lines`` (a byte-order mark allowed)."""
    if not schema.header:
        return None
    first = next(lines, None)
    if first is None:
        raise RecordFormatError(f"{source} is empty; schema {schema.name} expects a header row first")
    return Columns.of(first, schema, source)


def iter_record_chunks(
    path: str | os.PathLike[str] | None = None, *, schema: RecordSchema | None = None, chunk_lines: int = 100_000,
    strict: bool = True, keep_raw: bool = False,
) -> Iterator[Records]:
    """Read a file in chunks of ``chunk_lines`` lines (constant memory for the 4.9M-row full file).

    The first chunk decides the field count; later chunks are held to it, and line numbers run on.
    """
    path = Path(path) if path is not None else default_data_path()
    schema = schema or kdd99()
    buf: list[bytes] = []
    lines = open_text_lines(path)
    columns = _header(lines, schema, str(path))
    first = 2 if columns else 1
    n_fields: int | None = None
    for line in lines:
        buf.append(line)
        if len(buf) >= chunk_lines:
            chunk = parse_lines(buf, source=str(path), schema=schema, strict=strict, keep_raw=keep_raw,
                                first_line=first, n_fields=n_fields, columns=columns)
            n_fields = chunk.n_fields
            first += len(buf)
            buf = []
            yield chunk
    if buf:
        yield parse_lines(buf, source=str(path), schema=schema, strict=strict, keep_raw=keep_raw, first_line=first,
                          n_fields=n_fields, columns=columns)


def typed_fields(schema: RecordSchema, fields: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Numeric matrix, category arrays and per-row fault (``None`` = good) from an ``n x features`` frame.

    Cells may be text or numbers (JSON records hold both); text that is not a number becomes NaN and
    the schema's rules name it.
    """
    fields = fields.set_axis(list(schema.names), axis=1)
    numeric = np.empty((len(fields), len(schema.numeric)), dtype=np.float64)
    for j, name in enumerate(schema.numeric):
        col = fields[name]
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            numeric[:, j] = col.to_numpy(dtype="float64")
        else:
            numeric[:, j] = pd.to_numeric(col.astype("string").str.strip(), errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan)
    cats = [fields[name].astype("string").str.strip().fillna("").to_numpy(dtype=object) for name in schema.categorical]
    return numeric, cats, schema.faults(numeric, cats)


def as_frame(schema: RecordSchema, numeric: np.ndarray, cats: Sequence[np.ndarray]) -> pd.DataFrame:
    """Typed rows as a frame with the schema's named columns, in feature order."""
    cols: dict[str, np.ndarray] = {name: numeric[:, j] for j, name in enumerate(schema.numeric)}
    cols.update({name: np.asarray(cats[j], dtype=object) for j, name in enumerate(schema.categorical)})
    return pd.DataFrame(cols)[list(schema.names)]


def _reject_long(text: list[str], reasons: np.ndarray) -> None:
    """A line past ``MAX_LINE_CHARS`` is malformed whatever its fields: a record is a few hundred characters,
    and a 2 MB field must never become a message the broker refuses (issue 31 item 18)."""
    for j in np.flatnonzero(np.fromiter(map(len, text), dtype=np.int64, count=len(text)) > MAX_LINE_CHARS):
        reasons[j] = f"line longer than the {MAX_LINE_CHARS}-character limit"
        text[j] = ""


def parse_lines(
    raw_lines: Sequence[bytes], *, source: str, schema: RecordSchema | None = None, strict: bool = True,
    keep_raw: bool = False, first_line: int = 1, n_fields: int | None = None, columns: Columns | None = None,
) -> Records:
    """Validate raw lines; see :func:`read_records`. Trailing blank lines at the end of a file are ignored.
    ``columns``: a header-row file's layout; its lines are rearranged into the schema's order first."""
    schema = schema or kdd99()
    n = len(raw_lines)
    while n and not raw_lines[n - 1].strip():
        n -= 1
    lines = list(raw_lines[:n])
    line_no = np.arange(first_line, first_line + n)
    reasons = np.full(n, None, dtype=object)
    text = _decode_all(lines, reasons)
    _reject_long(text, reasons)
    if columns is not None:
        n_fields = schema.n_features + columns.labelled
        columns.arrange_all(text, reasons)

    counts = np.fromiter((t.count(",") + 1 for t in text), dtype=np.int64, count=n)
    blank = np.fromiter((not t.strip() for t in text), dtype=bool, count=n)
    reasons[blank & pd.isna(reasons)] = "empty line"
    if n_fields is None:
        candidates = counts[pd.isna(reasons)]
        ok_first = len(candidates) and candidates[0] in schema.field_counts
        n_fields = int(candidates[0]) if ok_first else schema.n_features + 1
    for j in np.flatnonzero((counts != n_fields) & pd.isna(reasons)):
        reasons[j] = f"expected {n_fields} comma-separated fields, found {counts[j]}"

    shaped = np.flatnonzero(pd.isna(reasons))
    parts = split_fields([text[j] for j in shaped], n_fields, schema)
    numeric, cats, field_reasons = typed_fields(schema, parts.iloc[:, : schema.n_features])
    labels: pd.Series | None = None
    if n_fields > schema.n_features:
        labels = parts.iloc[:, schema.n_features].fillna("").astype(str).str.strip().str.rstrip(".").str.lower()
        unset = pd.isna(field_reasons)
        field_reasons[unset & ~schema.label_ok(labels)] = "missing or malformed label"
        for k, name in enumerate(schema.label.trailing_fields[: n_fields - schema.n_features - 1]):
            value = pd.to_numeric(parts.iloc[:, schema.n_features + 1 + k], errors="coerce").to_numpy(dtype=float)
            field_reasons[pd.isna(field_reasons) & ~np.isfinite(value)] = f"non-numeric {name} (after the label)"
    reasons[shaped] = field_reasons

    ok = pd.isna(reasons)
    if strict and not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        raise RecordFormatError(f"{source}, line {line_no[j]}: {reasons[j]}")
    rejected = tuple(Rejected(int(line_no[j]), str(reasons[j])) for j in np.flatnonzero(~ok))
    keep_in_parts = np.asarray(pd.isna(field_reasons), dtype=bool)
    keep = shaped[keep_in_parts]
    return Records(
        source=source,
        schema=schema,
        features=as_frame(schema, numeric[keep_in_parts], [c[keep_in_parts] for c in cats]),
        labels=None if labels is None else labels.loc[keep_in_parts].reset_index(drop=True),
        lines=line_no[keep],
        raw=pd.Series([text[j] for j in keep], dtype=object) if keep_raw else None,
        rejected=rejected,
        n_fields=n_fields,
    )


def split_fields(rows: list[str], n_fields: int, schema: RecordSchema) -> pd.DataFrame:
    """Split rows that all have ``n_fields`` fields; numeric columns come back as float where they parse.

    pandas' C parser with quoting off, so a stray quote cannot swallow the next line. The detector's
    slow path (a batch holding something that is not a number) uses it too.
    """
    if not rows:
        return pd.DataFrame({i: pd.Series(dtype=object) for i in range(n_fields)})
    text_cols = {schema.names.index(c): str for c in schema.categorical}
    text_cols.update({i: str for i in range(schema.n_features, n_fields)})
    frame = pd.read_csv(
        io.StringIO("\n".join(rows)), header=None, names=list(range(n_fields)), dtype=text_cols,
        quoting=csv.QUOTE_NONE, skip_blank_lines=False, keep_default_na=False, na_values=[], engine="c",
        lineterminator="\n", low_memory=False,
    )
    if len(frame) != len(rows):  # cannot happen with quoting off; fail loudly rather than misalign ids
        raise RecordFormatError(f"internal: CSV parser returned {len(frame)} rows for {len(rows)} lines")
    return frame


def _decode_all(lines: list[bytes], reasons: np.ndarray) -> list[str]:
    """Decode every line; a line that is not UTF-8 becomes '' with its reason set."""
    try:
        return b"\n".join(lines).decode("utf-8").split("\n") if lines else []
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    for j, b in enumerate(lines):
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            reasons[j] = "not valid UTF-8"
            out.append("")
    return out
