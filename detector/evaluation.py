"""Live evaluation on labelled replays: decisions counted by the label header's family.

Labels never decide anything; when a replay carries them (the producer's ``label`` header), the detector
counts each scored record by (family, decision), so a dashboard shows the running model's precision,
recall and false-positive rate (recording rules ``job:detector_precision:ratio5m`` and friends). Batches
whose first record has no label header cost one header lookup.
"""

from __future__ import annotations

from collections import Counter
from operator import methodcaller
from typing import Any

import numpy as np

from core import headers
from core.schema import RecordSchema

ALERT, PASS = "alert", "pass"
_CACHE_LIMIT = 1024  # distinct raw labels remembered; hostile input could send endless new ones


class LabelTally:
    def __init__(self, schema: RecordSchema) -> None:
        self.schema = schema
        self.cache: dict[str, str] = {}

    def family(self, raw: str | None) -> str:
        if raw is None:
            return "unlabelled"
        found = self.cache.get(raw)
        if found is None:
            found = self.schema.family(self.schema.normalize_label(raw))
            if len(self.cache) < _CACHE_LIMIT:
                self.cache[raw] = found
        return found

    def tally(self, records: list[Any], rows: np.ndarray, flagged: np.ndarray) -> Counter[tuple[str, str]] | None:
        """(family, decision) counts of the scored rows (batch positions ``rows``; ``flagged`` aligned with them).

        Per record only C-level work (the header list, a dict of it, a lookup, mapped without Python bytecode
        per record: ``Message.headers()`` is most of the cost and is called once per record); the raw labels are grouped
        first, so decoding, normalising and the family lookup run once per distinct label, not per record.
        """
        if not len(rows) or headers.header(records[int(rows[0])].headers(), headers.LABEL) is None:
            return None
        name = headers.LABEL
        raw = _labels(records if len(rows) == len(records) else [records[pos] for pos in rows.tolist()], name)
        codes: dict[bytes | None, int] = {}
        group = np.fromiter(map(codes.setdefault, raw, range(len(raw))), dtype=np.int64, count=len(raw))
        _, group = np.unique(group, return_inverse=True)  # first-seen positions -> dense 0..k-1
        distinct = sorted(codes, key=codes.__getitem__)
        counts = np.bincount(group * 2 + np.asarray(flagged, dtype=np.int64), minlength=2 * len(distinct))
        out: Counter[tuple[str, str]] = Counter()
        for k, value in enumerate(distinct):
            family = self.family(headers.header([(name, value)], name))
            for decision, n in ((PASS, counts[2 * k]), (ALERT, counts[2 * k + 1])):
                if n:
                    out[(family, decision)] += int(n)
        return out


def _labels(records: list[Any], name: str) -> list[bytes | None]:
    """The raw ``name`` header of each record (None where absent), by C-level maps over the batch."""
    try:
        return list(map(methodcaller("get", name), map(dict, map(type(records[0]).headers, records))))
    except TypeError:  # a record without any header (headers() is None): the per-record way
        return [dict(r.headers() or ()).get(name) for r in records]
