"""What to replay: rows of a record file, in order or shuffled, subsampled, limited, encoded for the wire.

Rows stream in chunks so the 4.9M-row full file replays in constant memory; ``--shuffle`` needs the
whole file (it is a permutation of it) and says so in the help. Malformed lines are counted here and
never reach the wire.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from core.records import RecordFormatError, Records, iter_record_chunks, read_records
from core.schema import RecordSchema, kdd99

log = logging.getLogger(__name__)

FORMATS = ("csv", "json")


class Record(NamedTuple):
    """A tuple, not a dataclass: one is built per record sent, at up to ~100k a second."""

    record_id: int
    value: bytes
    label: str | None  # the source label as written in the file (e.g. "smurf."), or None if unlabelled
    fields: str | None = None  # a Zeek TSV line's column names (the zeek_fields header)
    ts: float | None = None  # a Zeek connection's time: what --speedup paces by


@dataclasses.dataclass
class SourceStats:
    lines_read: int = 0
    malformed: int = 0
    malformed_by_reason: Counter[str] = dataclasses.field(default_factory=Counter)
    dropped_by_anomaly_fraction: int = 0


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    data: Path
    fmt: str = "csv"
    shuffle: bool = False
    seed: int = 0
    limit: int | None = None
    loop: bool = False
    anomaly_fraction: float | None = None
    strict: bool = False
    chunk_lines: int = 50_000
    schema: RecordSchema = dataclasses.field(default_factory=kdd99)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.fmt!r}")
        if self.anomaly_fraction is not None and not 0.0 <= self.anomaly_fraction < 1.0:
            raise ValueError(f"--anomaly-fraction must be in [0, 1), got {self.anomaly_fraction}")
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")


def records(opts: SourceOptions, stats: SourceStats) -> Iterator[Record]:
    """Yield records to send, honouring every option; loops forever with ``loop``."""
    if opts.schema.zeek_conn:
        from producer.zeek_source import zeek_records

        yield from zeek_records(opts, stats)
        return
    sent = 0
    rng = np.random.default_rng(opts.seed)
    cache: dict[str, Records] = {}
    while True:
        for chunk in _prefetch(_chunks(opts, rng, cache)):
            _count_rejected(chunk, stats, opts.strict)
            keep = _subsample(chunk, opts.anomaly_fraction, rng, stats)
            for rec in _encode(chunk, keep, opts.fmt):
                if opts.limit is not None and sent >= opts.limit:
                    return
                sent += 1
                yield rec
        if not opts.loop or sent == 0:
            return


def _prefetch(chunks: Iterator[Records]) -> Iterator[Records]:
    """Parse the next chunk on a thread while this one is sent, so a paced replay has no pause per chunk."""
    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        q.put(("chunk", chunk), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer thread
            q.put(("error", exc))

    thread = threading.Thread(target=work, name="kdd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item  # type: ignore[misc]
            yield item  # type: ignore[misc]
    finally:
        stop.set()


def _chunks(opts: SourceOptions, rng: np.random.Generator, cache: dict[str, Records]) -> Iterator[Records]:
    if not opts.shuffle:
        yield from iter_record_chunks(opts.data, schema=opts.schema, chunk_lines=opts.chunk_lines, strict=opts.strict,
                                      keep_raw=True)
        return
    if "data" not in cache:  # a shuffled replay holds the file once, however many loops
        cache["data"] = read_records(opts.data, schema=opts.schema, strict=opts.strict, keep_raw=True)
        first_pass = True
    else:
        first_pass = False
    data = cache["data"]
    order = rng.permutation(len(data))
    # CSV payloads come from the raw lines: permuting the 41 typed columns too would only cost time
    features = data.features.iloc[order] if opts.fmt == "json" else data.features.iloc[order, :0]
    yield Records(
        source=data.source, schema=data.schema, features=features.reset_index(drop=True),
        labels=None if data.labels is None else data.labels.iloc[order].reset_index(drop=True),
        lines=data.lines[order], raw=_raw(data).iloc[order].reset_index(drop=True),
        rejected=data.rejected if first_pass else (), n_fields=data.n_fields,
    )


def _count_rejected(chunk: Records, stats: SourceStats, strict: bool) -> None:
    stats.lines_read += len(chunk) + len(chunk.rejected)
    for rej in chunk.rejected:
        stats.malformed += 1
        stats.malformed_by_reason[rej.reason] += 1
        if stats.malformed <= 10:
            log.warning("%s, line %d: %s (skipped)", chunk.source, rej.line, rej.reason)
    if strict and chunk.rejected:  # read_records raises first; this guards the invariant
        raise RecordFormatError(f"{chunk.source}, line {chunk.rejected[0].line}: {chunk.rejected[0].reason}")


def _subsample(chunk: Records, fraction: float | None, rng: np.random.Generator, stats: SourceStats) -> np.ndarray:
    """Row positions to send. With ``fraction``, all normal rows and just enough attacks for that share."""
    n = len(chunk)
    if fraction is None or chunk.labels is None:
        return np.arange(n)
    attack = chunk.is_attack
    n_normal = int((~attack).sum())
    want = int(round(fraction / (1.0 - fraction) * n_normal)) if fraction > 0 else 0
    attacks = np.flatnonzero(attack)
    chosen = np.sort(rng.choice(attacks, size=min(want, len(attacks)), replace=False))
    stats.dropped_by_anomaly_fraction += len(attacks) - len(chosen)
    return np.sort(np.concatenate([np.flatnonzero(~attack), chosen]))


def _raw(chunk: Records) -> pd.Series:
    if chunk.raw is None:
        raise RuntimeError("internal: source chunks are read with keep_raw=True")
    return chunk.raw


def _encode(chunk: Records, keep: np.ndarray, fmt: str) -> Iterator[Record]:
    raw = _raw(chunk).to_numpy()
    ids = chunk.record_ids
    names = chunk.schema.names
    labelled = chunk.n_fields > len(names)
    if fmt == "csv":
        extra = chunk.n_fields - len(names)  # trailing label (and NSL difficulty) fields to cut off
        for j in keep:
            if extra:
                parts = raw[j].rsplit(",", extra)  # one split yields both the payload and the label
                yield Record(int(ids[j]), parts[0].encode(), parts[1])
            else:
                yield Record(int(ids[j]), raw[j].encode(), None)
        return
    cats = set(chunk.schema.categorical)
    cols = {name: chunk.features[name].to_numpy() for name in names}
    for j in keep:
        obj = {name: (str(cols[name][j]) if name in cats else _number(cols[name][j])) for name in names}
        label = raw[j].split(",")[len(names)] if labelled else None
        yield Record(int(ids[j]), json.dumps(obj, separators=(",", ":")).encode(), label)


def _number(v: float) -> int | float:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f
