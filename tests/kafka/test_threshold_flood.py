"""``--recalibrate`` on a real broker, attacked (issue 33): an attacker who controls part of the traffic floods
records scoring just under the line to lift the threshold (and hide an attack above it), then floods
low-scoring records to lower it (and spend the analysts' attention). Each flood moves the threshold only as far
as the band (``--recalibrate-band``, 2 here) and the alerts say which line they were raised against: the
alert set is exactly what those bounds predict, record for record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

from core import wire
from core.kafka_io import produce
from core.records import read_records
from model.bundle import load_bundle
from testkit import DetectorProcess, alert_docs, committed_all, drain, wait_until
from tests.conftest import TopicFactory

WINDOW = 1000  # the smallest window the setting allows: a revision every 250 non-alerting records (and at
# most one a batch: batches of 250)
BAND = 2.0
FLOOD_UP, FLOOD_DOWN = 6_000, 12_000  # twice the records each needs to reach its end of the band


def test_floods_move_the_threshold_no_further_than_its_band(kafka_bootstrap: str, make_topic: TopicFactory,
                                                           small_bundle: Path, kdd_path: Path,
                                                           tmp_path: Path) -> None:
    data = read_records(kdd_path, limit=60_000, keep_raw=True)
    bundle = load_bundle(small_bundle)
    base = float(bundle.threshold)
    ratio = np.asarray(bundle.scorer().score_frame(data.features).score, dtype=np.float64) / base
    assert data.raw is not None
    payloads = [data.payload(line).encode() for line in data.raw]
    # the attacker's two records: one just under the line, one far below it
    near = int(np.flatnonzero((ratio > 0.8) & (ratio < 0.95))[0])
    low = int(np.argmin(ratio))
    assert ratio[low] < 0.5 / BAND
    # probes after each flood: attacks the lifted line must still catch (above the band's top), and records
    # either side of the lowered line's floor
    high = np.flatnonzero(ratio > BAND * 1.05)[:200]
    mid = np.flatnonzero((ratio > 1.05 / BAND) & (ratio < 0.9))[:200]
    under = np.flatnonzero((ratio > 0.2) & (ratio < 0.95 / BAND))[:200]
    assert len(high) == 200 and len(mid) == 200 and len(under) == 200, "the file has too few probe records"

    stream = ([(f"up-{i}", near) for i in range(FLOOD_UP)] + [(f"high-{i}", int(r)) for i, r in enumerate(high)]
              + [(f"down-{i}", low) for i in range(FLOOD_DOWN)]
              + [(f"mid-{i}", int(r)) for i, r in enumerate(mid)]
              + [(f"under-{i}", int(r)) for i, r in enumerate(under)])
    topic, alerts = make_topic("flood", 1), make_topic("flood-alerts", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 10})
    for rid, row in stream:
        key, value, hdrs = wire.encode(rid, payloads[row])
        produce(producer, topic, value, key, hdrs)
    assert producer.flush(60) == 0

    group = f"g-{topic}"
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, "--recalibrate", "--recalibrate-window",
                         str(WINDOW), "--recalibrate-band", str(BAND), "--batch-size", "250", group=group,
                         log_path=tmp_path / "d.log") as det:
        wait_until(lambda: committed_all(kafka_bootstrap, group, topic), 120, "the stream scored")
        revisions = det.total("detector_threshold_revisions_total")
        final = det.total("detector_model_threshold")
    expected = {f"high-{i}" for i in range(len(high))} | {f"mid-{i}" for i in range(len(mid))}
    docs = alert_docs(drain(kafka_bootstrap, alerts, len(expected), timeout_s=60))
    got = {d["record_id"]: d for d in docs}
    assert len(docs) == len(got), "an alert was written twice"
    # the lifted line stopped at base x 2: every attack above it alerted, against exactly that line
    assert not [r for r in got if r.startswith("up-")], "the near-line flood alerted"
    assert {d["threshold"] for r, d in got.items() if r.startswith("high-")} == {base * BAND}
    # the lowered line stopped at base / 2: records above it alert, records under it do not
    assert not [r for r in got if r.startswith(("down-", "under-"))], "a record under base / 2 alerted"
    assert {d["threshold"] for r, d in got.items() if r.startswith("mid-")} == {base / BAND}
    assert set(got) == expected
    assert final == base / BAND
    # 5% at most a revision: base -> 2 x base takes at least 15, 2 x base -> base / 2 at least 28 more
    assert revisions >= 15 + 28, revisions
    print(json.dumps({"threshold": base, "revisions": revisions, "alerts": len(got)}))
