"""Issue 30 end to end on the real broker: a labelled Zeek conn.log through the producer, the detector's conn stage
(featurizer per partition), the alert topic and the incident service; and the featurizer's state across ten
SIGKILLs under both commit modes."""

from __future__ import annotations

import concurrent.futures
import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Producer

from testkit import (
    REPO,
    DetectorProcess,
    IncidentProcess,
    alert_docs,
    committed_all,
    drain,
    latest_incidents,
    offline_zeek_scores,
    producer_args,
    start_replay,
    wait_until,
)
from tests.conftest import ZEEK_LABELLED, TopicFactory

LABELLED = ZEEK_LABELLED
CONNS = 700
KILLS = 10
ZEEK = ("--schema", "zeek_conn")
NOW = time.time()
GOOD = {"ts": 1655071198.444458, "uid": "Cforged", "id.orig_h": "147.32.81.167", "id.orig_p": 62771,
        "id.resp_h": "40.74.108.123", "id.resp_p": 443, "proto": "tcp", "conn_state": "SF"}
HOSTILE: list[tuple[bytes, str]] = [  # records an attacker or a broken shipper puts on the conn topic
    (b"\xff\xfe\x00 not text", "not_utf8"),
    (b"{\"ts\": 1655071198.4, \"uid\": ", "invalid_json"),
    (json.dumps({**GOOD, "id.orig_h": "999.1.1.1"}).encode(), "bad_field"),
    (json.dumps({**GOOD, "id.resp_p": 70000}).encode(), "bad_field"),
    (json.dumps({**GOOD, "ts": NOW + 86_400}).encode(), "future_ts"),  # would drag stream time a day ahead
    (json.dumps({"conn": {"conn": {"conn": GOOD}}}).encode(), "bad_envelope"),
    (b"[1, 2, 3]", "not_an_object"),
    (b"1655071198.4\tCx\t10.0.0.1", "field_count"),
    (b"#fields\tts\tuid", "header_line"),
]


def _produce_hostile(bootstrap: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i, (value, _) in enumerate(HOSTILE):
        producer.produce(topic, value, key=f"hostile-{i}".encode())
    assert producer.flush(30) == 0


def _pending_released(det: DetectorProcess) -> bool:
    samples = det.metrics()
    return samples.get("detector_featurizer_state{part=pending}", -1.0) == 0.0


def _alerts(bootstrap: str, topic: str, at_least: int) -> list[dict[str, Any]]:
    return alert_docs(drain(bootstrap, topic, at_least, timeout_s=60))


def _assert_equal_to_offline(docs: list[dict[str, Any]], expected: dict[str, float]) -> Counter[str]:
    """Every expected record alerted, nothing else, each with the offline score; returns the ids' counts."""
    ids = Counter(d["record_id"] for d in docs)
    missing, unexpected = set(expected) - set(ids), set(ids) - set(expected)
    assert not missing and not unexpected, f"{len(missing)} alerts missing, {len(unexpected)} unexpected"
    for d in docs:
        assert d["score"] == pytest.approx(expected[d["record_id"]], rel=1e-5, abs=1e-7), d["record_id"]
    return ids


def test_a_labelled_conn_log_through_producer_detector_and_incidents(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                       zeek_bundle: Path, tmp_path: Path) -> None:
    topic, alerts = make_topic("zeek", partitions=2), make_topic("zeek-alerts", 2)
    sent = subprocess.run(producer_args(kafka_bootstrap, topic, LABELLED, *ZEEK), capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert sent.returncode == 0 and json.loads(sent.stdout.strip().splitlines()[-1])["delivered"] == CONNS, sent.stderr
    _produce_hostile(kafka_bootstrap, topic)
    expected, _every, _rows = offline_zeek_scores(zeek_bundle, kafka_bootstrap, topic)
    assert 0 < len(expected) < CONNS
    det = DetectorProcess(kafka_bootstrap, topic, alerts, zeek_bundle, "--flush-idle-s", "2",
                          log_path=tmp_path / "d.log")
    inc = IncidentProcess(kafka_bootstrap, alerts, "--group-by", "source", log_path=tmp_path / "i.log")
    with det, inc:
        wait_until(lambda: det.total("detector_records_scored_total") == CONNS and _pending_released(det), 120,
                   "every connection released and scored")
        dead = drain(kafka_bootstrap, f"{topic}.dlq", len(HOSTILE), timeout_s=30)
        reasons = Counter(dict(m.headers())["dlq.reason"].decode() for m in dead)
        assert reasons == Counter(reason for _, reason in HOSTILE), reasons  # every record accounted for, once
        assert sorted(m.value() for m in dead) == sorted(value for value, _ in HOSTILE)  # the bytes kept
        wait_until(lambda: committed_all(kafka_bootstrap, f"g-{topic}", topic), 60, "input offsets committed")
        docs = _alerts(kafka_bootstrap, alerts, len(expected))
        _assert_equal_to_offline(docs, expected)
        schema = json.loads((REPO / "detector" / "schemas" / "alert.schema.json").read_text())
        for d in docs:
            jsonschema.validate(d, schema)
            assert d["conn"]["uid"].startswith("C") and d["conn"]["orig_h"] and d["conn"]["resp_p"] >= 0
        per_source = Counter(d["conn"]["orig_h"] for d in docs)
        top, n = per_source.most_common(1)[0]

        def top_source_counted() -> bool:
            incidents = latest_incidents(kafka_bootstrap, inc.topics["incident"]).values()
            return sum(i.get("sources", {}).get(top, 0) for i in incidents) == n

        wait_until(top_source_counted, 120, f"incidents grouped by source count {n} alerts from {top}")
        incidents = [i for i in latest_incidents(kafka_bootstrap, inc.topics["incident"]).values()
                     if top in i.get("sources", {})]
        assert all(set(i["sources"]) == {top} for i in incidents), "grouped by source: one originating host each"
        assert max(i["distinct_destinations"] for i in incidents) >= 1
        assert det.stop() == 0


def test_featurizer_state_survives_ten_sigkills_in_both_modes(kafka_bootstrap: str, make_topic: TopicFactory,
                                                              zeek_bundle: Path, tmp_path: Path) -> None:
    """Under each commit mode (the two run side by side, on topics of their own), ten detectors in a row are
    SIGKILLed at random points while the conn.log is replayed; an eleventh finishes. Each restart restores its
    partitions' featurizers from the snapshot its commit names and replays the records since; the alerts must
    equal offline scoring of the topic, feature for feature (at-least-once may re-send an alert, identical;
    exactly-once never does)."""
    modes = ("at-least-once", "exactly-once")
    with concurrent.futures.ThreadPoolExecutor(len(modes)) as pool:
        runs = [pool.submit(_kill_chain, kafka_bootstrap, make_topic, zeek_bundle, tmp_path / mode, mode)
                for mode in modes]
        for run in runs:
            print(run.result())


def _kill_chain(bootstrap: str, make_topic: TopicFactory, bundle: Path, work: Path, mode: str) -> str:
    work.mkdir()
    topic, alerts = make_topic("zkill", partitions=2), make_topic("zkill-alerts", 2)
    group = f"g-{topic}"
    extra: tuple[str, ...] = ("--group-instance-id", f"det-{topic}", "--batch-size", "5", "--state-every-s", "0.5",
                              "--flush-idle-s", "4")
    if mode == "exactly-once":
        extra += ("--exactly-once", "--transactional-id", f"tx-{topic}")
    log = work / "d.log"
    rng = random.Random(f"{mode}-zeek-kills")
    replay = start_replay(bootstrap, topic, LABELLED, CONNS, 7, *ZEEK, log_path=work / "p.log")  # 100 s
    restores = 0.0
    for _ in range(KILLS):
        det = DetectorProcess(bootstrap, topic, alerts, bundle, *extra, group=group, log_path=log)
        with det:
            at = rng.randrange(0, 10)
            wait_until(lambda at=at, det=det: det.total("detector_records_scored_total") >= at, 180,
                       f"{mode}: {at} records scored before the kill")
            restores += det.metrics().get("detector_featurizer_restores_total{outcome=restored}", 0.0)
            assert det.stop(signal.SIGKILL) == -signal.SIGKILL
    assert replay.poll() is None, f"{mode}: the replay should still be running: kills are meant to land during it"
    assert replay.wait(timeout=300) == 0, (work / "p.log").read_text()[-3000:]
    last = DetectorProcess(bootstrap, topic, alerts, bundle, *extra, group=group, log_path=log)
    with last:
        wait_until(lambda: committed_all(bootstrap, group, topic) and _pending_released(last), 300,
                   f"{mode}: all offsets committed and nothing held", 1.0)
        replayed = last.total("detector_records_replayed_total")
        assert last.stop() == 0
    expected, _every, _rows = offline_zeek_scores(bundle, bootstrap, topic)
    docs = _alerts(bootstrap, alerts, len(expected))
    ids = _assert_equal_to_offline(docs, expected)
    duplicates = sum(ids.values()) - len(ids)
    if mode == "exactly-once":
        assert duplicates == 0, f"{duplicates} duplicate alerts"
    else:  # a re-sent alert is the same alert: same connection, features and score
        first: dict[str, dict[str, Any]] = {}
        for d in docs:
            same = {k: d[k] for k in ("conn", "score", "top_features", "source")}
            assert first.setdefault(d["record_id"], same) == same, d["record_id"]
    assert restores >= KILLS - 2, f"{mode}: only {restores} partitions restored from snapshots"
    return (f"zeek {mode}: {KILLS} SIGKILLs, {len(expected)} alerts expected, 0 missing, {duplicates} duplicates, "
            f"{restores:.0f} partition restores, {replayed:.0f} records replayed by the last detector")
