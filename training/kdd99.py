"""The KDD Cup 99 record format: schema, labels and a validating reader shared by every package.

The producer replays these rows, training fits on them and the detector parses them off the wire, so the
feature order and the rules for what counts as a well-formed row live here once. This module imports
only numpy and pandas: the producer must not pay for TensorFlow to read a file.

Validation is vectorised (pandas string and numeric kernels over whole columns) because the same code
checks a 494,021-row file at start-up and every micro-batch in the detector.
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

FEATURES: tuple[str, ...] = (
    "duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land", "wrong_fragment",
    "urgent", "hot", "num_failed_logins", "logged_in", "num_compromised", "root_shell", "su_attempted",
    "num_root", "num_file_creations", "num_shells", "num_access_files", "num_outbound_cmds",
    "is_host_login", "is_guest_login", "count", "srv_count", "serror_rate", "srv_serror_rate",
    "rerror_rate", "srv_rerror_rate", "same_srv_rate", "diff_srv_rate", "srv_diff_host_rate",
    "dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
    "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
    "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate",
)
CATEGORICAL: tuple[str, ...] = ("protocol_type", "service", "flag")
NUMERIC: tuple[str, ...] = tuple(f for f in FEATURES if f not in CATEGORICAL)
N_FEATURES = len(FEATURES)  # 41
FLAGS: tuple[str, ...] = ("land", "logged_in", "is_host_login", "is_guest_login")
FLOAT32_MAX = float(np.finfo(np.float32).max)  # scoring runs in float32: a larger value would become inf
# Upper bound of every numeric field: rates are fractions, flags are 0/1, the rest must survive float32.
NUMERIC_MAX: dict[str, float] = {
    name: 1.0 if name.endswith("_rate") or name in FLAGS else FLOAT32_MAX for name in NUMERIC
}
NORMAL = "normal"

# Families from the KDD Cup 99 task description, plus the attacks that only appear in the KDD99 test set
# and NSL-KDD, so that evaluation on those files still groups them.
ATTACK_FAMILY: dict[str, str] = {
    **dict.fromkeys(
        ["back", "land", "neptune", "pod", "smurf", "teardrop", "apache2", "mailbomb", "processtable",
         "udpstorm"], "dos"),
    **dict.fromkeys(["ipsweep", "nmap", "portsweep", "satan", "mscan", "saint"], "probe"),
    **dict.fromkeys(
        ["ftp_write", "guess_passwd", "imap", "multihop", "phf", "spy", "warezclient", "warezmaster",
         "named", "sendmail", "snmpgetattack", "snmpguess", "worm", "xlock", "xsnoop", "httptunnel"], "r2l"),
    **dict.fromkeys(["buffer_overflow", "loadmodule", "perl", "rootkit", "ps", "sqlattack", "xterm"], "u2r"),
}

DATA_ENV = "KDD_DATA"
_REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_RELATIVE = Path("..") / "shared" / "data" / "kddcup.data_10_percent.gz"

# Field counts that identify a file's variant.
UNLABELLED, KDD99, NSL_KDD = 41, 42, 43


class KddFormatError(ValueError):
    """A file or record is not in KDD format; the message names where and what."""


def default_data_path() -> Path:
    """``$KDD_DATA`` if set, else the shared 10% file next to the repository."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return (_REPO_ROOT / _DEFAULT_RELATIVE).resolve()


def normalize_label(raw: str) -> str:
    """``'smurf.'`` (KDD99) and ``'smurf'`` (NSL-KDD) name the same class."""
    return raw.strip().rstrip(".").lower()


def is_attack(labels: pd.Series | np.ndarray) -> np.ndarray:
    return np.asarray(pd.Series(labels).astype(str) != NORMAL)


def attack_family(label: str) -> str:
    """Family of a normalised label: normal, dos, probe, r2l, u2r, or ``unknown`` for a new attack name."""
    if label == NORMAL:
        return NORMAL
    return ATTACK_FAMILY.get(label, "unknown")


# ---------------------------------------------------------------------------------- field validation
def validate_fields(fields: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Turn an ``n x 41`` frame of strings into typed features and a per-row rejection reason.

    Returns ``(features, reasons)``: ``features`` has the 41 named columns (float64 numerics, str
    categoricals; rejected rows hold NaN/garbage and must be dropped by the caller) and ``reasons`` is an
    object array with ``None`` for a good row, else a short reason naming the first bad field. Numbers must
    be finite and non-negative (every KDD feature is a count, a rate, a byte total or a flag), rates and flags at
    most 1, and the rest within float32 range (scoring precision).
    """
    n = len(fields)
    fields = fields.set_axis(list(FEATURES), axis=1)
    reasons = np.full(n, None, dtype=object)
    out: dict[str, pd.Series] = {}
    for name in FEATURES:
        col = fields[name]
        if name in CATEGORICAL:
            text = col.astype("string").str.strip()
            bad = (text.isna() | (text == "")).to_numpy(dtype=bool)
            _first_reason(reasons, bad, f"empty categorical field {name}")
            out[name] = text.fillna("").astype(object)
            continue
        if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
            arr = col.to_numpy(dtype="float64")
        else:
            arr = pd.to_numeric(col.astype("string").str.strip(), errors="coerce").to_numpy(
                dtype="float64", na_value=np.nan
            )
        # NaN covers both text that is not a number and a literal "nan", which no KDD row holds.
        _first_reason(reasons, np.isnan(arr), f"non-numeric or NaN value in field {name}")
        _first_reason(reasons, np.isinf(arr), f"infinite value in field {name}")
        _first_reason(reasons, arr < 0, f"negative value in field {name}")
        _first_reason(reasons, arr > NUMERIC_MAX[name], f"value above {NUMERIC_MAX[name]:g} in field {name}")
        out[name] = pd.Series(arr, index=fields.index)
    return pd.DataFrame(out, index=fields.index), reasons


def _first_reason(reasons: np.ndarray, mask: np.ndarray, reason: str) -> None:
    """Record ``reason`` for rows in ``mask`` that have no earlier reason (first fault wins)."""
    hit = mask & pd.isna(reasons)
    if hit.any():
        reasons[hit] = reason


# ------------------------------------------------------------------------------------------ reading
@dataclasses.dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class KddData:
    """Valid rows of one file, with where they came from (``line`` is 1-based, the record id is line-1)."""

    source: str
    features: pd.DataFrame
    labels: pd.Series | None
    lines: np.ndarray
    raw: pd.Series | None
    rejected: tuple[Rejected, ...]
    variant: int

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def record_ids(self) -> np.ndarray:
        """Stable id of a row: its 0-based position in the file, so alerts trace back to a source line."""
        return self.lines - 1

    @property
    def is_attack(self) -> np.ndarray:
        if self.labels is None:
            raise KddFormatError(f"{self.source} has no labels (41 fields); evaluation needs a labelled file")
        return is_attack(self.labels)

    def families(self) -> np.ndarray:
        if self.labels is None:
            raise KddFormatError(f"{self.source} has no labels (41 fields)")
        return np.array([attack_family(label) for label in self.labels], dtype=object)


def open_text_lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Raw lines of a gzip or plain file (by magic bytes, not by name), without line terminators."""
    p = Path(path)
    if not p.exists():
        raise KddFormatError(
            f"KDD data file {p} does not exist; pass --data PATH or set {DATA_ENV} to a KDD99 or NSL-KDD file"
        )
    if p.is_dir():
        raise KddFormatError(f"KDD data path {p} is a directory; pass the file itself")
    with open(p, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(p, "rb") as fh:  # type: ignore[operator]
        try:
            for raw in fh:
                yield raw.rstrip(b"\r\n")
        except (OSError, EOFError) as exc:
            raise KddFormatError(f"{p}: cannot be read to the end ({exc}); is the file truncated?") from exc


def read_kdd(
    path: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = None,
    strict: bool = True,
    keep_raw: bool = False,
) -> KddData:
    """Read a KDD99 (42 fields), NSL-KDD (43) or unlabelled (41) file from any path.

    ``strict`` raises :class:`KddFormatError` on the first bad line with its line number and reason (what
    training wants: a bad file must not silently shrink a training set); otherwise bad lines are
    returned in ``rejected`` (what the producer wants: count them, never send them). ``limit`` counts
    lines read, so record ids stay file positions. ``keep_raw`` keeps each valid line's text.
    """
    path = Path(path) if path is not None else default_data_path()
    raw_lines: list[bytes] = []
    for i, line in enumerate(open_text_lines(path)):
        if limit is not None and i >= limit:
            break
        raw_lines.append(line)
    return parse_lines(raw_lines, source=str(path), strict=strict, keep_raw=keep_raw)


def iter_kdd_chunks(
    path: str | os.PathLike[str] | None = None, *, chunk_lines: int = 100_000, strict: bool = True,
    keep_raw: bool = False,
) -> Iterator[KddData]:
    """Read a file in chunks of ``chunk_lines`` lines (constant memory for the 4.9M-row full file).

    The first chunk decides the variant; later chunks are held to it, and line numbers run on.
    """
    path = Path(path) if path is not None else default_data_path()
    buf: list[bytes] = []
    first = 1
    variant: int | None = None
    for line in open_text_lines(path):
        buf.append(line)
        if len(buf) >= chunk_lines:
            chunk = parse_lines(buf, source=str(path), strict=strict, keep_raw=keep_raw, first_line=first,
                                variant=variant)
            variant = chunk.variant
            first += len(buf)
            buf = []
            yield chunk
    if buf:
        yield parse_lines(buf, source=str(path), strict=strict, keep_raw=keep_raw, first_line=first, variant=variant)


def parse_lines(
    raw_lines: Sequence[bytes], *, source: str, strict: bool = True, keep_raw: bool = False, first_line: int = 1,
    variant: int | None = None,
) -> KddData:
    """Validate raw lines; see :func:`read_kdd`. Trailing blank lines at the end of a file are ignored.

    Lines with the right field count go through pandas' C CSV parser in one pass (quoting off, so a stray
    quote cannot swallow the next line); only columns that fail to parse as numbers take the slower
    per-value path that finds the offending rows.
    """
    n = len(raw_lines)
    while n and not raw_lines[n - 1].strip():
        n -= 1
    lines = list(raw_lines[:n])
    line_no = np.arange(first_line, first_line + n)
    reasons = np.full(n, None, dtype=object)
    text = _decode_all(lines, reasons)

    counts = np.fromiter((t.count(",") + 1 for t in text), dtype=np.int64, count=n)
    blank = np.fromiter((not t.strip() for t in text), dtype=bool, count=n)
    _first_reason(reasons, blank, "empty line")
    if variant is None:
        candidates = counts[pd.isna(reasons)]
        ok_first = len(candidates) and candidates[0] in (UNLABELLED, KDD99, NSL_KDD)
        variant = int(candidates[0]) if ok_first else KDD99
    for j in np.flatnonzero((counts != variant) & pd.isna(reasons)):
        reasons[j] = f"expected {variant} comma-separated fields, found {counts[j]}"

    shaped = np.flatnonzero(pd.isna(reasons))
    parts = _csv_frame([text[j] for j in shaped], variant)
    features, field_reasons = validate_fields(parts.iloc[:, :N_FEATURES])
    labels: pd.Series | None = None
    if variant >= KDD99:
        labels = parts.iloc[:, N_FEATURES].fillna("").astype(str).str.strip().str.rstrip(".").str.lower()
        label_ok = labels.str.fullmatch(r"[a-z0-9_\-]+").to_numpy(dtype=bool)
        _first_reason(field_reasons, ~label_ok, "missing or malformed label")
        if variant == NSL_KDD:
            diff = pd.to_numeric(parts.iloc[:, NSL_KDD - 1], errors="coerce").to_numpy(dtype=float)
            _first_reason(field_reasons, ~np.isfinite(diff), "non-numeric difficulty (43rd field)")
    reasons[shaped] = field_reasons

    ok = pd.isna(reasons)
    if strict and not ok.all():
        j = int(np.flatnonzero(~ok)[0])
        raise KddFormatError(f"{source}, line {line_no[j]}: {reasons[j]}")
    rejected = tuple(Rejected(int(line_no[j]), str(reasons[j])) for j in np.flatnonzero(~ok))
    keep_in_parts = pd.isna(field_reasons)
    keep = shaped[keep_in_parts]
    return KddData(
        source=source,
        features=features.loc[keep_in_parts].reset_index(drop=True),
        labels=None if labels is None else labels.loc[keep_in_parts].reset_index(drop=True),
        lines=line_no[keep],
        raw=pd.Series([text[j] for j in keep], dtype=object) if keep_raw else None,
        rejected=rejected,
        variant=variant,
    )


def _csv_frame(rows: list[str], variant: int) -> pd.DataFrame:
    """Split rows that all have ``variant`` fields; numeric columns come back as float where they parse."""
    if not rows:
        return pd.DataFrame({i: pd.Series(dtype=object) for i in range(variant)})
    text_cols = {FEATURES.index(c): str for c in CATEGORICAL}
    text_cols.update({i: str for i in range(N_FEATURES, variant)})
    frame = pd.read_csv(
        io.StringIO("\n".join(rows)), header=None, names=list(range(variant)), dtype=text_cols,
        quoting=csv.QUOTE_NONE, skip_blank_lines=False, keep_default_na=False, na_values=[], engine="c",
        lineterminator="\n", low_memory=False,
    )
    if len(frame) != len(rows):  # cannot happen with quoting off; fail loudly rather than misalign ids
        raise KddFormatError(f"internal: CSV parser returned {len(frame)} rows for {len(rows)} lines")
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


def strip_label(line: str, variant: int) -> str:
    """The 41 feature fields of a source line: what the producer sends, so the detector never sees labels."""
    if variant == UNLABELLED:
        return line
    return line.rsplit(",", variant - N_FEATURES)[0]
