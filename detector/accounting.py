"""Counters of a committed batch: they move when the batch is committed, so a clean run counts each record once."""

from __future__ import annotations

from collections import Counter

from core.schema import RecordSchema
from core.wire import ParsedBatch
from detector.input_source import InputBatch
from detector.metrics import DetectorMetrics, observe_many
from detector.scoring import ScoredBatch
from detector.shadow import Shadow, ShadowBatch


def account(m: DetectorMetrics, schema: RecordSchema, shadow_stage: Shadow | None, batch: InputBatch,
            parsed: ParsedBatch, scored: ScoredBatch, shadow: ShadowBatch | None,
            tally: Counter[tuple[str, str]] | None) -> None:
    for p, n in zip(batch.partitions, batch.counts, strict=True):
        m.consumed.labels(topic=batch.topic, partition=str(int(p))).inc(int(n))
    m.scored.inc(len(parsed.index))
    if parsed.trimmed:
        m.label_fields.inc(parsed.trimmed)
    observe_many(m.score, scored.scores)
    for code, n in Counter(r.code for r in parsed.rejections).items():
        m.dead_lettered.labels(reason=code).inc(n)
    for name, count in zip(schema.categorical, scored.unknown, strict=True):
        if count:
            m.unknown_categories.labels(feature=name).inc(int(count))
    if batch.records:  # an idle flush of the conn stage reads none
        m.batch_size.observe(len(batch.records))
    if shadow is not None and shadow_stage is not None:
        shadow_stage.account(shadow)
    for (family, decision), n in (tally or {}).items():
        m.decisions.labels(family=family, decision=decision).inc(n)
