"""The detector service against the real broker: exact alerts, dead letters, metrics, crash recovery."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from core.records import read_records
from core.routing import alert_route
from testkit import (
    REPO,
    DetectorProcess,
    alert_docs,
    assert_alerted,
    committed_all,
    drain,
    offline_alert_ids,
    produce_rows,
    scrape,
    start_replay,
    total,
    wait_until,
)
from tests.conftest import TopicFactory


def malformed_messages(sample_line: str, n: int) -> tuple[list[bytes], list[str]]:
    """``n`` hostile records of ten kinds, with the dead-letter reason each must get."""
    base = sample_line.rsplit(",", 1)[0]  # the 41 features, as the producer sends them
    fields = base.split(",")

    def with_field(i: int, value: str) -> bytes:
        f = list(fields)
        f[i] = value
        return ",".join(f).encode()

    kinds: list[tuple[bytes, str]] = [
        (b"", "empty"),
        (b"9" * 20_000, "oversized"),
        (with_field(1, "").replace(b",,", b",\xff\xfe,", 1), "not_utf8"),
        (b"1,2,3", "wrong_field_count"),
        (with_field(4, "abc"), "invalid_value"),
        (with_field(4, "nan"), "invalid_value"),
        (with_field(5, "-7"), "invalid_value"),
        (b'{"duration": 1}', "invalid_json"),
        (b'{"duration": ', "invalid_json"),
        (base.encode() + b"\n" + base.encode(), "wrong_field_count"),
    ]
    values = [kinds[i % len(kinds)][0] for i in range(n)]
    reasons = [kinds[i % len(kinds)][1] for i in range(n)]
    return values, reasons


@pytest.fixture(scope="module")
def rows_50k(kdd_path: Path):  # noqa: ANN201
    return read_records(kdd_path, limit=50_000, keep_raw=True)


def test_50k_rows_with_500_malformed(kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path,
                                     rows_50k, tmp_path: Path) -> None:
    data = rows_50k
    topic, alerts, dlq = make_topic("in", partitions=3), make_topic("alerts", 3), make_topic("dlq", 3)
    bad_values, bad_reasons = malformed_messages(data.raw[0], 500)
    bad = {i * 100 + 7: v for i, v in enumerate(bad_values)}  # mixed in, every 100 rows
    expected_reason = {f"bad-{i * 100 + 7}": r for i, r in enumerate(bad_reasons)}
    total = produce_rows(kafka_bootstrap, topic, data, bad)
    assert total == 50_500

    expected_ids, offline_scores = offline_alert_ids(small_bundle, data)
    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, dlq_topic=dlq,
                          log_path=tmp_path / "detector.log")
    with det:
        wait_until(lambda: det.total("detector_records_scored_total") >= 50_000
                   and det.total("detector_dead_letters_total") >= 500, 300, "all records handled")
        m = det.metrics()
        assert det.total("detector_records_scored_total") == 50_000  # every valid row scored exactly once
        assert det.total("detector_records_consumed_total") == 50_500
        assert det.total("detector_dead_letters_total") == 500
        by_reason = Counter(expected_reason.values())
        for reason, n in by_reason.items():
            assert m[f"detector_dead_letters_total{{reason={reason}}}"] == n, reason
        wait_until(lambda: det.total("detector_alerts_total") >= len(expected_ids), 60, "alert acks")
        assert det.total("detector_alerts_total") == len(expected_ids)
        assert m["detector_anomaly_score_count"] == 50_000
        assert det.get("/healthz")[0] == 200
        assert det.stop() == 0  # SIGTERM: clean exit

    alert_msgs = drain(kafka_bootstrap, alerts, len(expected_ids))
    docs = alert_docs(alert_msgs)
    got = Counter(int(d["record_id"]) for d in docs)
    assert set(got) == expected_ids  # exactly the rows whose offline score exceeds the threshold
    assert max(got.values()) == 1
    schema = json.loads((REPO / "detector" / "schemas" / "alert.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())  # built once
    for doc in docs:
        validator.validate(doc)
    by_id = dict(zip(data.record_ids.tolist(), offline_scores.tolist(), strict=True))
    for doc, msg in zip(docs[:2000], alert_msgs[:2000], strict=True):
        assert np.float32(doc["score"]) == np.float32(by_id[int(doc["record_id"])])
        # keyed by its kind's route: what the incident service's partitions are made of
        assert msg.key().decode() == alert_route(doc["categories"].values(), doc["top_features"][0]["feature"])
        assert doc["source"]["topic"] == topic and doc["severity"] > 1
        assert doc["label"] is not None and len(doc["top_features"]) == 5

    dead = drain(kafka_bootstrap, dlq, 500)
    assert len(dead) == 500
    for msg in dead:
        h = {k: v for k, v in msg.headers()}
        key = msg.key().decode()
        assert h["dlq.reason"].decode() == expected_reason[key], (key, h)
        assert msg.value() == bad[int(key.split("-")[1])]  # original bytes, untouched
        assert h["dlq.source.topic"].decode() == topic and int(h["dlq.source.offset"]) >= 0


def test_detector_score_equals_training_evaluate(kafka_bootstrap: str, make_topic: TopicFactory,
                                                 small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    data = read_records(kdd_path, limit=5000, keep_raw=True)
    sample = tmp_path / "sample.csv"
    sample.write_text("\n".join(data.raw) + "\n")
    scores_csv = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, "-m", "training", "evaluate", "--model", str(small_bundle), "--data",
                           str(sample), "--out", str(tmp_path / "eval"), "--no-plots", "--no-baseline",
                           "--scores-out", str(scores_csv)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    offline = pd.read_csv(scores_csv)
    flagged = offline[offline.flagged]
    assert len(flagged) > 0

    topic, alerts = make_topic("eq"), make_topic("eq-alerts")
    produce_rows(kafka_bootstrap, topic, data)
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, log_path=tmp_path / "d.log") as det:
        wait_until(lambda: det.total("detector_records_scored_total") >= 5000, 120, "scoring")
    docs = alert_docs(drain(kafka_bootstrap, alerts, len(flagged)))
    got = {int(d["record_id"]): np.float32(d["score"]) for d in docs}
    want = {int(r): np.float32(s) for r, s in zip(flagged.record_id, flagged.score, strict=True)}
    assert got == want  # same rows, bit-identical float32 scores


def test_invalid_configuration_names_the_setting(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "detector", "--model", str(tmp_path), "--batch-size", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--batch-size (DETECTOR_BATCH_SIZE) must be 1..100000, got 0" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "detector", "--model", str(tmp_path / "none")], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "detector", "--model", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "has no bundle.json" in proc.stderr


KILL_CYCLES = 5


def test_sigkill_at_random_points_during_a_replay_in_both_modes(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                small_bundle: Path, kdd_path: Path,
                                                                tmp_path: Path) -> None:
    """Under each commit mode (side by side, on topics of their own), five detectors in a row are SIGKILLed at
    random points while the replay producer runs; a sixth finishes. The alerted set must equal the offline set;
    under exactly-once, with no duplicate."""
    rows = 150_000
    expected, _ = offline_alert_ids(small_bundle, read_records(kdd_path, limit=rows, keep_raw=True))
    modes = ("at-least-once", "exactly-once")
    with concurrent.futures.ThreadPoolExecutor(len(modes)) as pool:
        runs = [pool.submit(_kill_chain, kafka_bootstrap, make_topic, small_bundle, kdd_path, rows, expected,
                            tmp_path / mode, mode) for mode in modes]
        for run in runs:
            print(run.result())


def _kill_chain(bootstrap: str, make_topic: TopicFactory, bundle: Path, kdd_path: Path, rows: int,
                expected: set[int], work: Path, mode: str) -> str:
    work.mkdir()
    topic, alerts = make_topic("kill", partitions=4), make_topic("kill-alerts", 4)
    group = f"g-{topic}"
    # Stable identities, as a StatefulSet pod name gives: each new process takes its killed predecessor's
    # place in the group (static membership) and fences its open transaction at once, instead of waiting
    # out the session and transaction timeouts.
    extra: tuple[str, ...] = ("--group-instance-id", f"det-{topic}")
    if mode == "exactly-once":
        extra += ("--exactly-once", "--transactional-id", f"tx-{topic}")
    log = work / "d.log"
    rng = random.Random(f"{mode}-kills")
    replay = start_replay(bootstrap, topic, kdd_path, rows, 2000, log_path=work / "p.log")
    kill_points = []
    for _ in range(KILL_CYCLES):
        det = DetectorProcess(bootstrap, topic, alerts, bundle, *extra, group=group, log_path=log)
        with det:
            at = rng.randrange(0, 12_000)  # 0: killed as soon as it is ready, before or during its first batch
            wait_until(lambda at=at, det=det: det.total("detector_records_scored_total") >= at, 180,
                       f"{mode}: {at} records scored before the kill")
            assert det.stop(signal.SIGKILL) == -signal.SIGKILL
            kill_points.append(at)
    assert replay.poll() is None, f"{mode}: the replay should still be running: kills are meant to land during it"
    assert replay.wait(timeout=300) == 0, (work / "p.log").read_text()[-3000:]
    last = DetectorProcess(bootstrap, topic, alerts, bundle, *extra, group=group, log_path=log)
    with last:
        wait_until(lambda: committed_all(bootstrap, group, topic), 300, f"{mode}: all offsets committed", 1.0)
        assert last.stop() == 0
    duplicates = assert_alerted(bootstrap, alerts, expected, no_duplicates=mode == "exactly-once")
    return (f"{mode}: {KILL_CYCLES} SIGKILLs (after {kill_points} records scored), {len(expected)} alerts "
            f"expected, 0 missing, {duplicates} duplicates")


def test_two_detectors_share_partitions_and_one_stops(kafka_bootstrap: str, make_topic: TopicFactory,
                                                      small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    data = read_records(kdd_path, limit=120_000, keep_raw=True)
    topic, alerts = make_topic("scale", partitions=6), make_topic("scale-alerts", 6)
    group = f"g-{topic}"
    expected, _ = offline_alert_ids(small_bundle, data)
    a = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, group=group, log_path=tmp_path / "a.log")
    b = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, group=group, log_path=tmp_path / "b.log")
    with a, b:
        wait_until(lambda: a.total("detector_assigned_partitions") + b.total("detector_assigned_partitions") == 6,
                   120, "6 partitions shared by two detectors")
        assert a.total("detector_assigned_partitions") == 3 == b.total("detector_assigned_partitions")
        produce_rows(kafka_bootstrap, topic, data)
        wait_until(lambda: a.total("detector_records_scored_total") + b.total("detector_records_scored_total")
                   >= 40_000, 300, "both scoring")
        scored_by_b = b.total("detector_records_scored_total")
        assert b.stop() == 0  # graceful: finishes its batch, commits, leaves the group
        wait_until(lambda: a.total("detector_assigned_partitions") == 6, 120, "survivor takes all partitions")
        wait_until(lambda: committed_all(kafka_bootstrap, group, topic), 300, "all offsets committed", 1.0)
        assert scored_by_b > 0
    assert_alerted(kafka_bootstrap, alerts, expected)


def test_output_topics_follow_an_input_topic_created_later(kafka_bootstrap: str, small_bundle: Path, kdd_path: Path,
                                                            tmp_path: Path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"late-{uuid.uuid4().hex[:10]}"
    alerts, dlq = f"{topic}-alerts", f"{topic}.dlq"
    log = tmp_path / "detector.log"
    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, "-X", "topic.metadata.refresh.interval.ms=500",
                          dlq_topic=dlq, log_path=log)
    det.start(wait_ready=False)
    try:
        wait_until(lambda: log.exists() and "does not exist yet" in log.read_text(), 120, "the detector to wait")
        assert alerts not in admin.list_topics(timeout=10).topics  # not created with one partition
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])[topic].result(timeout=60)
        data = read_records(kdd_path, limit=2000, keep_raw=True)
        produce_rows(kafka_bootstrap, topic, data)
        wait_until(lambda: det.total("detector_records_scored_total") >= 2000, 180, "the late input scored")
        md = admin.list_topics(timeout=10).topics
        assert len(md[alerts].partitions) == 4 and len(md[dlq].partitions) == 4
        assert det.stop() == 0
    finally:
        if det.alive():
            det.stop(signal.SIGKILL)


def test_sigusr1_dumps_every_threads_stack_and_the_detector_goes_on(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                     small_bundle: Path, tmp_path: Path) -> None:
    """What an operator (or the test harness, before it SIGKILLs a detector that ignored SIGTERM) reads when a
    detector hangs: every thread's Python stack, written even while the main thread is inside a C call."""
    topic, alerts = make_topic("usr1", 2), make_topic("usr1-alerts", 2)
    log = tmp_path / "d.log"
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, log_path=log) as det:
        assert det.proc is not None
        det.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "Current thread" in log.read_text(), 30, "a stack dump in the log")
        assert det.alive() and det.ready()
        assert "detector/service.py" in log.read_text()  # the main thread's frames, in the loop
        assert det.stop() == 0


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_processes_share_the_partitions_exactly_once_through_worker_and_supervisor_kills(
        kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    """``--processes 2`` (issue 34): two detector processes split the partitions through the group. A worker
    SIGKILLed mid-replay takes its supervisor down with exit 1 (the other worker stops cleanly); a supervisor
    SIGKILLed takes its workers down (they stop, never linger holding partitions); a third start finishes.
    Exactly-once: the alerts equal offline scoring with no duplicate."""
    rows = 60_000
    topic, alerts = make_topic("procs", partitions=4), make_topic("procs-alerts", 4)
    group = f"g-{topic}"
    expected, _ = offline_alert_ids(small_bundle, read_records(kdd_path, limit=rows, keep_raw=True))
    extra = ("--exactly-once", "--transactional-id", f"tx-{topic}", "--group-instance-id", f"det-{topic}")
    log = tmp_path / "d.log"

    def scored(port: int) -> float:
        return total(scrape(port), "detector_records_scored_total")

    first = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, *extra, group=group, log_path=log,
                            processes=2)
    with first:
        # 30 s of replay from the moment the first pair is ready: the kills and the second pair's start land in it
        replay = start_replay(kafka_bootstrap, topic, kdd_path, rows, 2000, log_path=tmp_path / "p.log")
        assert [total(scrape(p), "detector_assigned_partitions") for p in first.ports] == [2, 2]
        wait_until(lambda: all(scored(p) > 0 for p in first.ports), 120, "both processes scoring")
        workers = _children(first.pid)
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        assert first.proc is not None and first.proc.wait(timeout=120) == 1  # the group restarts as one
    second = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, *extra, group=group, log_path=log,
                             processes=2)
    with second:
        workers = _children(second.pid)
        assert second.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_until(lambda: not any(Path(f"/proc/{w}").exists() and _state(w) != "Z" for w in workers), 120,
                   "the workers of a killed supervisor stop")
    assert replay.poll() is None, "the replay should still be running: kills are meant to land during it"
    assert replay.wait(timeout=300) == 0, (tmp_path / "p.log").read_text()[-3000:]
    last = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, *extra, group=group, log_path=log,
                           processes=2)
    with last:
        wait_until(lambda: committed_all(kafka_bootstrap, group, topic), 300, "all offsets committed", 1.0)
        assert last.stop() == 0
    assert assert_alerted(kafka_bootstrap, alerts, expected, no_duplicates=True) == 0


def _state(pid: int) -> str:
    """A process's state letter (Z: exited, waiting for its parent to read the status)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"
