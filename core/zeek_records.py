"""A Zeek conn.log file as ``core.records.Records`` of the ``zeek_conn`` schema: what training, evaluation and the
comparison read, featurized by the same streaming featurizer the detector runs (in file order, then flushed).

Labels (evaluation only, and training's choice of rows): the Stratosphere and IoT-23 ``label`` column, lower
case; ``Background`` (the capture network's own traffic, which their labeller does not judge) is read as
``benign``. A file without labels has none: training then fits on every row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.featurizer import Featurizer
from core.records import RecordFormatError, Records, Rejected
from core.schema import RecordSchema
from core.zeek import ZeekError, parse_line
from core.zeek_log import log_lines

BENIGN_LABELS = {"benign": "benign", "background": "benign", "normal": "benign"}


def read_zeek_records(path: str | Path, schema: RecordSchema, *, strict: bool = True,
                      limit: int | None = None) -> Records:
    featurizer = Featurizer()
    line_of: dict[int, int] = {}
    rows: list[tuple[int, dict[str, object], str | None]] = []
    rejected: list[Rejected] = []
    for i, line in enumerate(log_lines(path)):
        if limit is not None and i >= limit:
            break
        try:
            conn = parse_line(line.text, line.fields)
        except ZeekError as exc:
            if strict:
                raise RecordFormatError(f"{path}, line {line.number}: {exc.reason}: {exc}") from None
            rejected.append(Rejected(line.number, f"{exc.reason}: {exc}"))
            continue
        line_of[id(conn)] = line.number
        rows += [(line_of.pop(id(c)), f, c.label) for c, f in featurizer.offer(conn)]
    rows += [(line_of.pop(id(c)), f, c.label) for c, f in featurizer.flush()]
    if not rows:
        raise RecordFormatError(f"{path} holds no Zeek connections (is it a conn.log?)")
    rows.sort(key=lambda r: r[0])  # file order: record ids stay line positions
    frame = pd.DataFrame([f for _, f, _ in rows])[list(schema.names)]
    labelled = any(label is not None for _, _, label in rows)
    labels = None if not labelled else pd.Series(
        [BENIGN_LABELS.get((label or "").strip().lower(), (label or "unlabelled").strip().lower())
         for _, _, label in rows])
    return Records(source=str(path), schema=schema, features=frame, labels=labels,
                   lines=np.array([n for n, _, _ in rows], dtype=np.int64), raw=None, rejected=tuple(rejected),
                   n_fields=len(schema.names))
