"""The detector's conn stage in process (no broker): a restart at any batch boundary, from the snapshot the last
commit names, continues record for record as if there had been no restart."""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from core import featurizer, zeek
from core.schema import RecordSchema
from core.zeek_log import log_lines
from detector.conn_stage import ConnStage
from detector.conn_state import StateStore, assemble, parse_metadata
from detector.metrics import DetectorMetrics

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "zeek" / "ctu-normal-40-day1.conn.log.labeled"
TOPIC = "conns"


@dataclasses.dataclass
class Msg:
    """What the stage reads of a confluent_kafka.Message."""

    part: int
    off: int
    val: bytes | None
    hdrs: list[tuple[str, bytes]]

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off

    def value(self) -> bytes | None:
        return self.val

    def key(self) -> bytes:
        return str(self.off).encode()

    def headers(self) -> list[tuple[str, bytes]]:
        return self.hdrs

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self.off)


class Compacted(StateStore):
    """The state topic as compaction leaves it (the latest record per key), read without a broker."""

    def __init__(self) -> None:
        super().__init__("state", {}, 900_000)
        self.latest: dict[bytes, Any] = {}

    def write(self, outputs: list[Any]) -> None:
        for out in outputs:
            self.latest[out.key] = Msg(out.partition, 0, out.value, out.headers)

    def read(self, input_topic: str, partition: int, snap: int, timeout_s: float = 120) -> dict[str, Any] | None:
        prefix = f"{input_topic}:{partition}:{snap % 2}:".encode()
        return assemble([m for k, m in sorted(self.latest.items()) if k.startswith(prefix)])


class FakeConsumer:
    def __init__(self, committed: dict[int, TopicPartition]) -> None:
        self.done = committed

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [self.done.get(tp.partition, TopicPartition(tp.topic, tp.partition, -1001)) for tp in partitions]


def messages() -> list[Msg]:
    """The fixture's connections as the producer sends them, spread over two partitions."""
    out: list[Msg] = []
    offsets = [0, 0]
    for i, line in enumerate(log_lines(FIXTURE)):
        conn = zeek.parse_line(line.text, line.fields)
        p = i % 2
        out.append(Msg(p, offsets[p], zeek.to_json_line(conn).encode(), []))
        offsets[p] += 1
    out.insert(100, Msg(0, -1, b"not a connection", []))  # a dead letter among them (offset fixed below)
    offsets = [0, 0]
    for m in out:
        m.off = offsets[m.part]
        offsets[m.part] += 1
    return out


def stage(store: StateStore, every_s: float) -> ConnStage:
    return ConnStage(RecordSchema.load("zeek_conn"), TOPIC, store, DetectorMetrics(1.0), featurizer.Settings(),
                     every_s, flush_idle_s=1e9)


def run(st: ConnStage, msgs: list[Msg], batch: int, store: Compacted,
        committed: dict[int, TopicPartition]) -> list[tuple[str | None, dict[str, Any]]]:
    """Each batch processed, its state written and committed (as a transaction would); the released rows."""
    out = []
    for i in range(0, len(msgs), batch):
        cb = st.process(msgs[i:i + batch], ())
        store.write(cb.state)
        cb.on_done()
        committed.update({tp.partition: tp for tp in cb.offsets})
        cols = cb.parsed.columns(cb.parsed.index)
        out += [(r.record_id, {k: v[j] for k, v in cols.items()}) for j, r in enumerate(cb.records)]
    return out


@pytest.mark.parametrize("every_s", [0.0, 1e9])  # a snapshot at every batch; only the first (a long replay)
def test_a_restart_at_any_batch_continues_record_for_record(every_s: float) -> None:
    msgs = messages()
    whole = run(stage(Compacted(), every_s), msgs, 7, Compacted(), {})
    assert len(whole) > 600
    for cut in (7, 70, 350, 693):
        store, committed = Compacted(), {}
        first = stage(store, every_s)
        before = run(first, msgs[:cut], 7, store, committed)
        second = stage(store, every_s)
        assigned = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
        second.assign(FakeConsumer(committed), assigned)  # type: ignore[arg-type]
        starts = {tp.partition: tp.offset for tp in assigned}
        assert all(starts[p] <= committed[p].offset for p in starts)
        again = [m for m in msgs if m.off >= starts[m.part]]  # the consumer reads on from the snapshot's offset
        after = run(second, again, 7, store, committed)
        assert before + after == whole, f"restart after {cut} records"


def test_commit_metadata_names_the_snapshot_and_garbage_is_none() -> None:
    st, store = stage(Compacted(), 0.0), Compacted()
    cb = st.process(messages()[:10], ())
    meta = parse_metadata(cb.offsets[0].metadata)
    assert meta is not None and meta["snap"] == 0 and meta["at"] == 0
    for text in (None, "", "{", "[]", '{"v": 1}', '{"v": 1, "snap": "x", "at": 0, "rel": 0}', '{"v": 2}'):
        assert parse_metadata(text) is None
    assert store.read(TOPIC, 0, 0) is None  # nothing written: a restore starts fresh ("lost" when committed)


@pytest.mark.hostile
def test_a_snapshot_with_a_forged_or_missing_chunk_is_not_restored() -> None:
    store = Compacted()
    st = stage(store, 0.0)
    store.write(st.process(messages()[:50], ()).state)
    assert store.read(TOPIC, 0, 0) is not None
    key = next(k for k in store.latest if k.startswith(b"conns:0:0:"))
    store.latest[key] = Msg(0, 0, b"x", [("featurizer.chunk", b"\xff/zz")])
    assert store.read(TOPIC, 0, 0) is None


@pytest.mark.hostile
def test_a_connection_stamped_after_its_record_is_a_dead_letter_and_does_not_move_stream_time() -> None:
    """The attack: one record with ``ts`` far ahead would make every genuine connection after it "late" (clamped
    to the forged time minus the lateness). It is refused by its own Kafka timestamp, and the genuine records
    around it are featurized exactly as without it."""
    genuine = [m for m in messages() if m.part == 0 and m.val != b"not a connection"][:150]
    conn = zeek.parse_value(genuine[10].val)
    forged = Msg(0, 0, zeek.to_json_line(dataclasses.replace(conn, ts=1_700_000_000 + 86_400.0)).encode(), [])
    results = []
    for msgs in (genuine, genuine[:11] + [forged] + genuine[11:]):
        msgs = [dataclasses.replace(m, off=i) for i, m in enumerate(msgs)]
        st = stage(Compacted(), 0.0)
        first = st.process(msgs, ())
        flushed = st.parts[0].feat.flush()
        cols = first.parsed.columns(first.parsed.index)
        rows = [{k: v[j] for k, v in cols.items()} for j in range(len(first.records))]
        results.append((rows, len(flushed), st.parts[0].feat.counts["late"], [(r.code, r.index)
                                                                                for r in first.parsed.rejections]))
    (clean, clean_held, clean_late, none), (attacked, held, late, refused) = results
    assert none == [] and refused == [("future_ts", 11)]
    assert attacked == clean and held == clean_held and late == clean_late


@pytest.mark.hostile
def test_a_snapshot_that_decodes_but_does_not_fit_starts_empty_instead_of_stopping_the_detector() -> None:
    store, committed = Compacted(), {}
    first = stage(store, 0.0)
    run(first, messages()[:60], 7, store, committed)
    snap = parse_metadata(committed[0].metadata)["snap"]  # type: ignore[index]
    key = next(k for k in store.latest if k.startswith(f"conns:0:{snap % 2}:".encode()))
    forged = zlib.compress(json.dumps({"snap": snap, "at": parse_metadata(committed[0].metadata)["at"],  # type: ignore[index]
                                       "released": "many", "featurizer": {"max_ts": []}, "held": [[1]]}).encode())
    store.latest[key] = Msg(0, 0, forged, [("featurizer.chunk", b"0/1")])
    second = stage(store, 0.0)
    assigned = [TopicPartition(TOPIC, 0)]
    second.assign(FakeConsumer(committed), assigned)  # type: ignore[arg-type]
    assert second.metrics.featurizer_restores.labels(outcome="lost")._value.get() == 1
    assert second.parts[0].feat.arrived == 0 and assigned[0].offset < 0  # empty windows, read on from the commit
