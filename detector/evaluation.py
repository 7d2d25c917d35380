"""Live evaluation on labelled replays: decisions counted by the label header's family.

Labels never decide anything; when a replay carries them (the producer's ``label`` header), the detector
counts each scored record by (family, decision), so a dashboard shows the running model's precision,
recall and false-positive rate (recording rules ``job:detector_precision:ratio5m`` and friends). Batches
whose first record has no label header cost one header lookup.
"""

from __future__ import annotations

from collections import Counter
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
        """(family, decision) counts of the scored rows (batch positions ``rows``; ``flagged`` aligned with them)."""
        if not len(rows) or headers.header(records[int(rows[0])].headers(), headers.LABEL) is None:
            return None
        out: Counter[tuple[str, str]] = Counter()
        for pos, hit in zip(rows.tolist(), flagged.tolist(), strict=True):
            out[(self.family(headers.header(records[pos].headers(), headers.LABEL)), ALERT if hit else PASS)] += 1
        return out
