"""What the detector should alert on for Zeek records already on a topic, computed offline from the topic itself.

The detector featurizes each input partition on its own (``detector.conn_stage``), so the expectation reads the
topic back, featurizes each partition's records in offset order with the same featurizer settings, releases
what is held at the end (the detector's idle flush), and scores every row with the bundle.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from core import headers as h
from core import wire, zeek
from core.decision import is_anomalous
from core.featurizer import Featurizer, Settings
from core.kafka_io import read_to_end


def offline_zeek_scores(model: Path, bootstrap: str, topic: str, settings: Settings | None = None,
                        max_ahead_s: float = 300.0
                        ) -> tuple[dict[str, float], dict[str, float], dict[str, dict[str, Any]]]:
    """(record id -> score of every flagged record, record id -> score of every record, record id -> features)."""
    from model.bundle import load_bundle

    by_partition: dict[int, list[Any]] = defaultdict(list)
    for msg in read_to_end({"bootstrap.servers": bootstrap}, topic):
        by_partition[msg.partition()].append(msg)
    ids: list[str] = []
    rows: list[dict[str, Any]] = []
    for msgs in by_partition.values():
        feat = Featurizer(settings)
        record_of: dict[int, str] = {}
        for msg in sorted(msgs, key=lambda m: m.offset()):
            fields = h.header(msg.headers(), zeek.FIELDS_HEADER)
            try:
                conn = zeek.parse_value(msg.value(), fields.split("\t") if fields else None)
            except zeek.ZeekError:
                continue  # a dead letter
            if conn.ts > msg.timestamp()[1] / 1000 + max_ahead_s:
                continue  # a dead letter (future_ts)
            record_of[id(conn)] = str(wire.record_id(msg.headers(), msg.key()))
            for c, f in feat.offer(conn):
                ids.append(record_of.pop(id(c)))
                rows.append(f)
        for c, f in feat.flush():
            ids.append(record_of.pop(id(c)))
            rows.append(f)
    bundle = load_bundle(model)
    scores = bundle.scorer().score_frame(pd.DataFrame(rows)[list(bundle.schema.names)]).score
    flagged = is_anomalous(scores, bundle.threshold)
    every = {i: float(s) for i, s in zip(ids, scores, strict=True)}
    return ({i: every[i] for i, f in zip(ids, flagged, strict=True) if f}, every,
            dict(zip(ids, rows, strict=True)))
