"""The replay producer against the real broker: complete, exact, paced, sampled, and strict about input."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.records import read_records
from core.schema import kdd99
from deploy.kafka.local_kafka import free_port
from testkit import drain

FEATURES = kdd99().names

REPO = Path(__file__).resolve().parents[2]


def replay(bootstrap: str, topic: str, *args: str, timeout: float = 300) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic, *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def headers(msg: object) -> dict[str, str]:
    return {k: v.decode() for k, v in (msg.headers() or [])}  # type: ignore[attr-defined]


def test_first_100k_rows_arrive_complete_and_exact(kafka_bootstrap: str, kdd_path: Path) -> None:
    n = 100_000
    topic = f"replay-{os.getpid()}-{time.time_ns()}"
    summary = replay(kafka_bootstrap, topic, "--data", str(kdd_path), "--limit", str(n), "--partitions", "4")
    assert summary["sent"] == summary["delivered"] == n and summary["failed"] == 0

    source = read_records(kdd_path, limit=n, keep_raw=True)
    by_id = {int(rid): line for rid, line in zip(source.record_ids, source.raw, strict=True)}
    messages = drain(kafka_bootstrap, topic, n)
    ids = Counter(int(m.key()) for m in messages)
    assert len(messages) == n and set(ids) == set(range(n)) and max(ids.values()) == 1
    for m in messages:
        h = headers(m)
        line = by_id[int(m.key())]
        assert h["record_id"] == m.key().decode()
        assert m.value().decode() == source.payload(line)  # payload: the row without its label
        assert h["label"] == line.rsplit(",", 1)[1]  # label travels only in the header


def test_rate_is_smooth_and_accurate(kafka_bootstrap: str, make_topic, kdd_path: Path) -> None:
    rate, seconds = 5000, 10
    topic = make_topic("rate")
    summary = replay(kafka_bootstrap, topic, "--data", str(kdd_path), "--rate", str(rate),
                     "--limit", str(rate * seconds))
    messages = drain(kafka_bootstrap, topic, rate * seconds)
    assert len(messages) == rate * seconds
    stamps = np.sort(np.array([m.timestamp()[1] for m in messages], dtype=np.int64))  # ms, set at produce
    span_s = (stamps[-1] - stamps[0]) / 1000.0
    achieved = (len(stamps) - 1) / span_s
    assert abs(achieved - rate) / rate <= 0.05, f"achieved {achieved:.0f}/s"
    assert abs(float(summary["rate_per_s"]) - rate) / rate <= 0.05
    # every sliding one-second window (start at each record) holds at most 1.2x the rate
    ends = np.searchsorted(stamps, stamps + 1000, side="left")
    worst = int((ends - np.arange(len(stamps))).max())
    assert worst <= 1.2 * rate, f"a one-second window held {worst} records"


def test_anomaly_fraction_sets_attack_share(kafka_bootstrap: str, make_topic, kdd_path: Path) -> None:
    topic = make_topic("frac")
    summary = replay(kafka_bootstrap, topic, "--data", str(kdd_path), "--anomaly-fraction", "0.01",
                     "--limit", "60000", "--seed", "3")
    messages = drain(kafka_bootstrap, topic, int(summary["delivered"]))
    labels = [headers(m)["label"] for m in messages]
    share = sum(label != "normal." for label in labels) / len(labels)
    assert len(labels) == 60_000
    assert abs(share - 0.01) <= 0.002, share


def test_malformed_lines_are_counted_and_never_sent(kafka_bootstrap: str, make_topic, kdd_path: Path,
                                                    tmp_path: Path) -> None:
    good = read_records(kdd_path, limit=1000, keep_raw=True)
    lines = list(good.raw)
    planted = {10: "garbage", 20: lines[20].replace(",", ";"), 30: lines[30].replace("tcp", ""),
               40: lines[40].replace(",0,", ",-1,", 1), 50: ""}
    for i, bad in planted.items():
        lines[i] = bad
    path = tmp_path / "planted.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    topic = make_topic("bad")
    summary = replay(kafka_bootstrap, topic, "--data", str(path))
    assert summary["malformed_lines_skipped"] == len(planted)
    assert summary["delivered"] == 1000 - len(planted)
    messages = drain(kafka_bootstrap, topic, 1000 - len(planted))
    sent_ids = {int(m.key()) for m in messages}
    assert len(messages) == 1000 - len(planted)
    assert sent_ids == set(range(1000)) - set(planted)

    strict = subprocess.run([sys.executable, "-m", "producer", "--bootstrap-servers", kafka_bootstrap,
                             "--topic", topic, "--data", str(path), "--strict"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert strict.returncode == 2
    assert f"{path}, line 11: expected 42 comma-separated fields, found 1" in strict.stderr


def test_json_format_carries_41_named_fields(kafka_bootstrap: str, make_topic, kdd_path: Path) -> None:
    topic = make_topic("json")
    replay(kafka_bootstrap, topic, "--data", str(kdd_path), "--format", "json", "--limit", "500")
    source = read_records(kdd_path, limit=500)
    messages = drain(kafka_bootstrap, topic, 500)
    assert len(messages) == 500
    for m in messages[:50]:
        obj = json.loads(m.value())
        assert list(obj) == list(FEATURES)
        row = source.features.iloc[int(m.key())]
        assert obj["service"] == row["service"] and float(obj["src_bytes"]) == row["src_bytes"]
        assert "label" not in obj


def test_sigterm_flushes_and_reports(kafka_bootstrap: str, make_topic, kdd_path: Path) -> None:
    topic = make_topic("sig")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "producer", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--data",
         str(kdd_path), "--rate", "2000", "--loop", "--metrics-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        # wait for evidence of sending: records on the topic, not a fixed sleep
        first = drain(kafka_bootstrap, topic, 1, timeout_s=60)
        assert first, "producer sent nothing"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
            scraped = r.read().decode()
        delivered = [ln for ln in scraped.splitlines() if ln.startswith("producer_records_delivered_total{")]
        assert delivered and float(delivered[0].rsplit(" ", 1)[1]) > 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and summary["failed"] == 0
    assert summary["delivered"] == summary["sent"] > 0
    assert len(drain(kafka_bootstrap, topic, int(summary["delivered"]))) == summary["delivered"]


@pytest.mark.parametrize("args,message", [
    (["--rate", "-1"], "--rate (PRODUCER_RATE) must be >= 0"),
    (["--anomaly-fraction", "1.5"], "--anomaly-fraction (PRODUCER_ANOMALY_FRACTION) must be in [0, 1)"),
    (["--data", "/nonexistent/kdd.gz"], "/nonexistent/kdd.gz does not exist"),
])
def test_bad_arguments_exit_2_with_reason(kafka_bootstrap: str, args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "producer", "--bootstrap-servers", kafka_bootstrap, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]


@pytest.mark.parametrize("fixture", ["iot23-layout.conn.log.labeled", "port-scanning.conn.json.log"])
def test_a_zeek_conn_log_replays_without_its_labels(kafka_bootstrap: str, fixture: str) -> None:
    """Issue 30: each connection as Zeek wrote it, the labels taken off the value (the label header carries
    them, for evaluation), a TSV line's column names in the zeek_fields header; read back, every record is the
    file's connection. Paced by the capture's own ts, 100,000 times faster."""
    from core import zeek
    from core.zeek_log import read_conns

    path = REPO / "tests" / "fixtures" / "zeek" / fixture
    want, _ = read_conns(path)
    topic = f"zeek-{os.getpid()}-{time.time_ns()}"
    summary = replay(kafka_bootstrap, topic, "--data", str(path), "--schema", "zeek_conn", "--speedup", "100000",
                     "--partitions", "1")
    assert summary["sent"] == summary["delivered"] == len(want) and summary["malformed_lines_skipped"] == 0
    got = []
    for m in sorted(drain(kafka_bootstrap, topic, len(want)), key=lambda m: m.offset()):
        h = headers(m)
        fields = h[zeek.FIELDS_HEADER].split("\t") if zeek.FIELDS_HEADER in h else None
        assert b"Benign" not in m.value() and b"Malicious" not in m.value()  # the detector never sees labels
        conn = zeek.parse_value(m.value(), fields)
        got.append((conn, h.get("label")))
    assert [c for c, _ in got] == [dataclasses.replace(c, label=None, detailed_label=None) for c in want]
    assert [label for _, label in got] == [c.label for c in want]
