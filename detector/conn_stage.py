"""Conn stage: Zeek conn records in, featurized rows out, one featurizer per input partition, exact across
restarts (``detector.conn_state`` says how).

A record is parsed (``core.zeek``: any shape, the ``zeek_fields`` header naming a TSV line's columns) and offered
to its partition's featurizer, which holds it until its lateness has passed (``core.featurizer``); what the
featurizer releases is scored like rows of any other schema, with the records kept as :class:`HeldRecord`. A
record that is no connection is a dead letter with ``core.zeek``'s reason.

The commit contract is unchanged: a batch commits the offsets after its records. Records still held are not
lost by that, because every commit names the snapshot to restart from, and a restart replays the records
since that snapshot with their outputs suppressed. An input idle for ``flush_idle_s`` is flushed (everything
held is released) and snapshotted at once, so a flush is part of the state, never replayed differently.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from core import featurizer, wire, zeek
from core import headers as h
from core.featurizer import Featurizer
from core.poison import Skipped
from core.schema import RecordSchema
from core.wire import ParsedBatch, Rejection
from detector.conn_state import StateStore, metadata, parse_metadata
from detector.held_record import HeldRecord
from detector.metrics import DetectorMetrics
from detector.outputs import OutMessage
from detector.settings import DetectorSettings

log = logging.getLogger(__name__)

SNAPSHOT_SHARE = 10  # a snapshot waits at least this many times as long as the last one took: at most ~10% of time
_FIELDS_CACHE = 64  # distinct zeek_fields headers remembered (one per Zeek version and log layout)


@dataclasses.dataclass
class _Partition:
    feat: Featurizer
    held: dict[int, HeldRecord] = dataclasses.field(default_factory=dict)  # arrival number -> record
    snap: int = -1  # the last snapshot written (-1: none yet)
    snap_at: int = -1  # the input offset it was taken at
    snap_committed: bool = True  # its batch committed: the next may overwrite the other slot
    snap_wall: float = 0.0
    snap_cost: float = 0.0  # seconds the last snapshot took: the next waits at least 10 times that
    released: int = 0
    next_offset: int = -1
    replay_until: int = -1  # offsets below were handled before a restart: replayed with outputs suppressed
    last_seen: float = dataclasses.field(default_factory=time.monotonic)
    reported: dict[str, int] = dataclasses.field(default_factory=dict)  # featurizer counts already in metrics


@dataclasses.dataclass(frozen=True)
class ConnBatch:
    """What one input batch (or an idle flush) gives the scoring stages: the released rows and their records,
    the rejections (positions in the input batch), the offsets to commit and the state outputs to write."""

    records: list[HeldRecord]
    parsed: ParsedBatch
    offsets: list[TopicPartition]
    state: list[OutMessage]
    on_done: Callable[[], None]
    replayed: int = 0


class ConnStage:
    def __init__(self, schema: RecordSchema, topic: str, store: StateStore, metrics: DetectorMetrics,
                 settings: featurizer.Settings, state_every_s: float, flush_idle_s: float,
                 max_ahead_s: float = 300.0) -> None:
        self.schema = schema
        self.topic = topic
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.state_every_s = state_every_s
        self.flush_idle_s = flush_idle_s
        self.max_ahead_s = max_ahead_s
        self.parts: dict[int, _Partition] = {}
        self.fields: dict[bytes, list[str]] = {}

    @classmethod
    def of(cls, s: DetectorSettings, schema: RecordSchema, client_conf: dict[str, Any],
           metrics: DetectorMetrics) -> ConnStage:
        """The stage as the detector's settings describe it."""
        return cls(schema, s.input_topic, StateStore(s.featurizer_state_topic, client_conf, s.max_output_bytes),
                   metrics, featurizer.Settings(lateness_s=s.lateness_s, max_pending=s.max_held), s.state_every_s,
                   s.flush_idle_s, s.max_ahead_s)

    # ------------------------------------------------------------------ assignment
    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebalance (inside ``consume()``): each new partition continues from its committed offset's snapshot;
        the partition's start is set to the snapshot's offset, and the records up to the commit are replayed."""
        committed = consumer.committed(partitions, timeout=60)
        for tp, done in zip(partitions, committed, strict=True):
            meta = parse_metadata(done.metadata) if done.offset >= 0 else None
            doc = self.store.read(tp.topic, tp.partition, meta["snap"]) if meta is not None else None
            part = self._restored(tp.partition, doc, done.offset) if meta is not None and doc is not None and doc.get(
                "at") == meta["at"] else None
            if meta is None or part is None:
                outcome = "fresh" if done.offset < 0 else "lost"
                if outcome == "lost":
                    log.error("partition %d: the featurizer snapshot its commit names is not on %s; starting with "
                              "empty windows (features differ from the reference for a while)", tp.partition,
                              self.store.topic)
                self.parts[tp.partition] = _Partition(Featurizer(self.settings))
            else:
                outcome = "restored"
                self.parts[tp.partition] = part
                tp.offset = meta["at"]
                log.info("partition %d: featurizer snapshot %d restored; replaying offsets %d-%d", tp.partition,
                         meta["snap"], meta["at"], done.offset)
            self.metrics.featurizer_restores.labels(outcome=outcome).inc()
        self._report()

    def _restored(self, partition: int, doc: dict[str, Any], committed: int) -> _Partition | None:
        """The partition as the snapshot left it, or None when the snapshot does not make one (written by another
        version, or not by this code at all): a restore must never stop the detector inside a rebalance."""
        try:
            feat = Featurizer.restore(doc["featurizer"], self.settings)
            conns = {seq: conn for _, seq, conn in feat.pending}
            held = {int(seq): HeldRecord.from_json(raw, self.topic, partition, conns[int(seq)])
                    for seq, raw in doc["held"]}
            part = _Partition(feat, held, snap=int(doc["snap"]), snap_at=int(doc["at"]),
                              released=int(doc["released"]), replay_until=committed, reported=dict(feat.counts))
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            log.error("partition %d: the featurizer snapshot cannot be restored (%s: %s)", partition,
                      type(exc).__name__, str(exc)[:200])
            return None
        part.snap_wall = time.monotonic()
        return part

    def forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.parts.pop(tp.partition, None)

    # ------------------------------------------------------------------ batches
    def process(self, records: list[Any], unreadable: tuple[int, ...]) -> ConnBatch:
        now = time.monotonic()
        out: list[HeldRecord] = []
        rows: list[dict[str, Any]] = []
        rejections: list[Rejection] = []
        state: list[OutMessage] = []
        touched: dict[int, _Partition] = {}
        bad = set(unreadable)
        replayed = 0
        for i, msg in enumerate(records):
            partition, offset = msg.partition(), msg.offset()
            part = touched[partition] = self.parts.get(partition) or self._new(partition)
            replay = offset < part.replay_until
            replayed += replay
            if not replay and part.snap_committed and (part.snap < 0 or now - part.snap_wall >= max(
                    self.state_every_s, SNAPSHOT_SHARE * part.snap_cost)):
                state += self._snapshot(partition, part, offset, now)
            part.next_offset, part.last_seen = offset + 1, now
            try:
                if i in bad:
                    raise zeek.ZeekError(wire.BAD_HEADER, "a header key is not valid UTF-8 (sent by a "
                                         "non-librdkafka client?); the record is kept here whole")
                conn = zeek.parse_value(msg.value(), self._fields(msg.headers()))
                self._not_ahead(conn, msg.timestamp())
            except zeek.ZeekError as exc:
                if not replay:  # a replayed record's dead letter was written before the restart
                    rejections.append(Rejection(i, exc.reason, str(exc)))
                continue
            part.held[part.feat.arrived] = HeldRecord.of(msg, conn)
            for seq, _conn, features in part.feat.offer_seq(conn):
                held = part.held.pop(seq)
                part.released += 1
                if not replay:  # released by a replayed record: its outputs were written before the restart
                    out.append(held)
                    rows.append(features)
        return self._batch(out, rows, rejections, touched, state, replayed)

    def flush_idle(self) -> ConnBatch | None:
        """Release what partitions idle for ``flush_idle_s`` hold, with a snapshot of the flushed state."""
        now = time.monotonic()
        out: list[HeldRecord] = []
        rows: list[dict[str, Any]] = []
        state: list[OutMessage] = []
        touched: dict[int, _Partition] = {}
        for partition, part in self.parts.items():
            if (part.feat.pending and now - part.last_seen >= self.flush_idle_s and part.snap_committed
                    and part.next_offset >= max(0, part.replay_until)):
                for seq, _conn, features in part.feat.flush_seq():
                    out.append(part.held.pop(seq))
                    rows.append(features)
                    part.released += 1
                state += self._snapshot(partition, part, part.next_offset, now)
                touched[partition] = part
        return self._batch(out, rows, [], touched, state, 0) if touched else None

    def skip(self, skipped: list[Skipped]) -> tuple[list[Skipped], list[TopicPartition]]:
        """Undecodable ranges (``core.poison``): those not already handled before a restart, and the offsets past
        them, naming the partition's snapshot like every commit."""
        kept, offsets = [], []
        for s in skipped:
            part = self.parts.get(s.partition) or self._new(s.partition)
            if s.end <= part.replay_until:
                continue
            part.next_offset = max(part.next_offset, s.end)
            kept.append(s)
            offsets.append(self._offset(s.partition, part))
        return kept, offsets

    # ------------------------------------------------------------------ helpers
    def _not_ahead(self, conn: zeek.Conn, kafka_ts: tuple[int, int]) -> None:
        """A connection cannot start after the record that reports it was written: one stamped later than its
        Kafka timestamp plus ``max_ahead_s`` is a forgery or a broken clock, and would drag the featurizer's
        stream time ahead, so that every genuine connection after it arrived "late" and was clamped. The Kafka
        timestamp is the record's own (a replay after a restart decides the same), and a broker bounds it: Kafka
        4's ``message.timestamp.after.max.ms`` refuses records stamped more than an hour ahead."""
        ts_type, ms = kafka_ts
        if ts_type and ms > 0 and conn.ts > ms / 1000 + self.max_ahead_s:
            raise zeek.ZeekError("future_ts", f"ts {conn.ts:.6f} is {conn.ts - ms / 1000:.0f} s after the record's "
                                 f"Kafka timestamp (at most {self.max_ahead_s:g} s): a forged or broken clock")

    def _new(self, partition: int) -> _Partition:
        part = self.parts[partition] = _Partition(Featurizer(self.settings))
        return part

    def _fields(self, headers: list[tuple[str, bytes | None]] | None) -> list[str] | None:
        raw = dict(headers or ()).get(zeek.FIELDS_HEADER)
        if not raw:
            return None
        found = self.fields.get(raw)
        if found is None:
            text = h.header([(zeek.FIELDS_HEADER, raw)], zeek.FIELDS_HEADER) or ""
            found = [name for name in text.split("\t") if name][:256]
            if len(self.fields) >= _FIELDS_CACHE:
                self.fields.clear()
            self.fields[raw] = found
        return found

    def _snapshot(self, partition: int, part: _Partition, offset: int, now: float) -> list[OutMessage]:
        t0 = time.perf_counter()
        part.feat.expire()  # idle hosts never shape a feature again: not worth writing
        part.snap += 1
        part.snap_at, part.snap_committed, part.snap_wall = offset, False, now
        doc = {"snap": part.snap, "at": offset, "released": part.released, "featurizer": part.feat.snapshot(),
               "held": [[seq, held.to_json()] for seq, held in part.held.items()]}
        out = self.store.encode(self.topic, partition, part.snap, doc)
        part.snap_cost = time.perf_counter() - t0
        self.metrics.featurizer_snapshots.observe(part.snap_cost)
        return out

    def _offset(self, partition: int, part: _Partition) -> TopicPartition:
        return TopicPartition(self.topic, partition, part.next_offset,
                              metadata=metadata(part.snap, part.snap_at, part.released))

    def _batch(self, out: list[HeldRecord], rows: list[dict[str, Any]], rejections: list[Rejection],
               touched: dict[int, _Partition], state: list[OutMessage], replayed: int) -> ConnBatch:
        offsets = [self._offset(p, part) for p, part in touched.items()
                   if part.next_offset >= part.replay_until and part.snap >= 0]
        written = [(part, part.snap) for part in touched.values() if not part.snap_committed]

        def on_done() -> None:
            for part, snap in written:
                if part.snap == snap:
                    part.snap_committed = True
            self._report()

        return ConnBatch(out, self._parsed(rows, rejections), offsets, state, on_done, replayed)

    def _parsed(self, rows: list[dict[str, Any]], rejections: list[Rejection]) -> ParsedBatch:
        s = self.schema
        numeric = np.array([[r[name] for name in s.numeric] for r in rows], dtype=np.float64).reshape(
            len(rows), len(s.numeric))
        categories = [np.array([r[name] for r in rows], dtype=object) for name in s.categorical]
        return ParsedBatch(s, numeric, categories, np.arange(len(rows), dtype=np.int64), rejections)

    def _report(self) -> None:
        m = self.metrics
        for part in self.parts.values():
            for event, n in part.feat.counts.items():
                if n > part.reported.get(event, 0):
                    m.featurizer_events.labels(event=event).inc(n - part.reported.get(event, 0))
                    part.reported[event] = n
        for name, size in (("hosts", lambda f: len(f.hosts)), ("window", lambda f: len(f.window)),
                           ("pending", lambda f: len(f.pending))):
            m.featurizer_state.labels(part=name).set(sum(size(p.feat) for p in self.parts.values()))
