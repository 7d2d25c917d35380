"""Issue 31 items 4 and 5 on a real broker: a compressed batch that no consumer can decode (a zstd bomb that
decompresses past ``receive.message.max.bytes``) used to stop the detector and the incident service for good
(``_BAD_COMPRESSION`` on every fetch, readiness still 200). Now the batch's exact extent is found
(``core.poison``), it becomes one dead letter naming the range, and every record after it is read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from core.records import read_records
from testkit import DetectorProcess, IncidentProcess, drain, wait_until
from tests.conftest import TopicFactory
from tests.unit.test_triage import doc

pytestmark = pytest.mark.hostile
BOMB_RECORDS = 90  # one zstd batch of 90 x 1 MB of zeros: ~6 KB on the wire, 90 MB decompressed


def bomb(bootstrap: str, topic: str) -> None:
    """One batch of ``BOMB_RECORDS`` records that decompresses past the consumers' 64 MiB limit."""
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "zstd", "linger.ms": 2000,
                         "message.max.bytes": 1_000_000_000, "batch.size": 500_000_000,
                         "batch.num.messages": 100_000})
    for _ in range(BOMB_RECORDS):
        producer.produce(topic, value=b"\0" * 1_000_000)
    assert producer.flush(60) == 0


def plain(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for v in values:
        producer.produce(topic, value=v)
    assert producer.flush(60) == 0


def test_an_undecodable_batch_is_skipped_to_its_exact_end(kafka_bootstrap: str, make_topic: TopicFactory,
                                                          small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    rows = read_records(kdd_path, limit=200, keep_raw=True)
    lines = [rows.payload(line).encode() for line in rows.raw]
    topic, alerts, dlq = make_topic("bomb-in", 1), make_topic("bomb-alerts", 1), make_topic("bomb-dlq", 1)
    plain(kafka_bootstrap, topic, lines[:100])
    bomb(kafka_bootstrap, topic)
    plain(kafka_bootstrap, topic, lines[100:])
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, dlq_topic=dlq,
                         log_path=tmp_path / "d.log") as det:
        wait_until(lambda: det.total("detector_records_scored_total") >= len(lines), 120,
                   "the records after the bomb scored")
        assert det.total("detector_undecodable_records_total") == BOMB_RECORDS
        assert det.get("/readyz")[0] == 200 and det.stop() == 0
    [dead] = drain(kafka_bootstrap, dlq, 1)
    h = dict(dead.headers())
    assert h["dlq.reason"] == b"undecodable_batch" and h["dlq.source.offset"] == b"100"
    assert h["dlq.source.end_offset"] == str(100 + BOMB_RECORDS).encode()  # exactly the batch: nothing more

    alerts_in = make_topic("bomb-inc", 1)
    t0 = int(time.time() * 1000) - 60_000
    plain(kafka_bootstrap, alerts_in, [json.dumps(doc(1, t0)).encode()])
    bomb(kafka_bootstrap, alerts_in)
    plain(kafka_bootstrap, alerts_in, [json.dumps(doc(2, t0 + 1000)).encode()])
    with IncidentProcess(kafka_bootstrap, alerts_in, log_path=tmp_path / "i.log") as svc:
        wait_until(lambda: svc.total("incidents_alerts_total") == 2, 120, "the alert after the bomb filed")
        [dead] = drain(kafka_bootstrap, svc.topics["dlq"], 1)
        assert dict(dead.headers())["dlq.source.end_offset"] == str(1 + BOMB_RECORDS).encode()
