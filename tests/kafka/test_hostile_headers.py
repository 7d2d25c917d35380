"""Issue 31 item 3 on a real broker: a record whose header key is not valid UTF-8 (any non-librdkafka client can
send one) segfaulted the detector, then crash-looped it with ``SystemError``. Every consumer now reads headers
once, guarded (``core.kafka_io.read_headers``): the detector dead-letters the record (``bad_header``, the value
kept whole), scores the rest of the batch, and a restart reads on; the incident service files such an alert."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer

from core.records import read_records
from testkit import DetectorProcess, IncidentProcess, drain, wait_until
from testkit.raw_headers import produce_raw
from tests.conftest import TopicFactory
from tests.unit.test_triage import doc

pytestmark = pytest.mark.hostile
BAD_KEYS = [b"\xff\xfe", b"rec\xc3(", b"\xed\xa0\x80"]  # invalid start byte, bad continuation, a surrogate


def test_a_header_key_that_is_not_utf8_is_a_dead_letter_not_a_crash(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                    small_bundle: Path, kdd_path: Path,
                                                                    tmp_path: Path) -> None:
    rows = read_records(kdd_path, limit=300, keep_raw=True)
    topic, alerts, dlq = make_topic("hdr-in", 1), make_topic("hdr-alerts", 1), make_topic("hdr-dlq", 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    lines = [rows.payload(line).encode() for line in rows.raw]
    for i, line in enumerate(lines[:150]):
        producer.produce(topic, value=line, key=f"ok-{i}".encode(), headers=[("record_id", str(i).encode())])
    assert producer.flush(30) == 0
    for key in BAD_KEYS:  # among good records, in the same batches
        produce_raw(kafka_bootstrap, topic, lines[0], [(b"record_id", b"bad"), (key, b"v")])
    for i, line in enumerate(lines[150:], start=150):
        producer.produce(topic, value=line, key=f"ok-{i}".encode(), headers=[("record_id", str(i).encode())])
    assert producer.flush(30) == 0
    total = len(lines) + len(BAD_KEYS)

    for run in range(2):  # the second run restarts on the same group: nothing left, no crash loop
        det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, dlq_topic=dlq,
                              log_path=tmp_path / f"d{run}.log")
        with det:
            if run == 0:
                wait_until(lambda det=det: det.total("detector_records_consumed_total") >= total, 120, "all handled")
                assert det.total("detector_records_scored_total") == len(lines)
                assert det.total("detector_dead_letters_total") == len(BAD_KEYS)
            assert det.alive() and det.get("/healthz")[0] == 200
            assert det.stop() == 0
    dead = drain(kafka_bootstrap, dlq, len(BAD_KEYS))
    assert [dict(m.headers())["dlq.reason"] for m in dead] == [b"bad_header"] * len(BAD_KEYS)
    assert all(m.value() == lines[0] for m in dead)  # the record's value, whole

    incident_alerts = make_topic("hdr-inc", 1)
    alert = json.dumps(doc(1, int(time.time() * 1000) - 60_000)).encode()
    produce_raw(kafka_bootstrap, incident_alerts, alert, [(BAD_KEYS[0], b"x")])
    with IncidentProcess(kafka_bootstrap, incident_alerts, log_path=tmp_path / "i.log") as svc:
        wait_until(lambda: svc.total("incidents_alerts_total") == 1, 60, "the alert filed")
        assert svc.alive()
