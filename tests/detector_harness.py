"""Run the detector as operators do, as a process, and watch it through its own endpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from deploy.kafka.local_kafka import free_port
from detector.soak import rss_bytes
from training.bundle import load_bundle
from training.kdd99 import KddData, strip_label

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll a condition (readiness, progress) until true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class DetectorProcess:
    def __init__(self, bootstrap: str, input_topic: str, alert_topic: str, model: Path, *extra: str,
                 group: str | None = None, dlq_topic: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic",
                     input_topic, "--alert-topic", alert_topic, "--model", str(model), "--metrics-port",
                     str(self.port), "--metrics-host", "127.0.0.1", "--group-id", group or f"g-{input_topic}",
                     *(["--dlq-topic", dlq_topic] if dlq_topic else []), *extra]
        self.log_path = log_path
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 120) -> DetectorProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **self.env})
        wait_until(lambda: self._alive_or_raise() and self.ready(), ready_timeout_s, "detector /readyz")
        return self

    def _alive_or_raise(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:] if self.log_path else ""
            raise AssertionError(f"detector exited with {self.proc.returncode}:\n{tail}")
        return True

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def metrics(self) -> dict[str, float]:
        """Flat samples: ``name{k=v,...}`` -> value, summed over nothing (exact series)."""
        status, text = self.get("/metrics")
        if status != 200:
            return {}
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def total(self, name: str) -> float:
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident set size now (the figure an OOM killer and a container limit look at)."""
        return rss_bytes(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def __enter__(self) -> DetectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def produce_rows(bootstrap: str, topic: str, data: KddData, bad: dict[int, bytes] | None = None) -> int:
    """Produce the rows as the replay producer does (csv, record id key and header, label header),
    with ``bad[i]`` messages inserted before row i. Returns the number of messages."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    raw = data.raw
    assert raw is not None

    def send(value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                producer.poll(0.1)

    n = 0
    for i, (rid, line) in enumerate(zip(data.record_ids, raw, strict=True)):
        if bad and i in bad:
            send(bad[i], f"bad-{i}".encode(), [("record_id", f"bad-{i}".encode())])
            n += 1
        send(strip_label(line, data.variant).encode(), str(rid).encode(),
             [("record_id", str(rid).encode()), ("label", line.rsplit(",", 1)[1].encode())])
        n += 1
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    return n


def offline_alert_ids(model: Path, data: KddData) -> tuple[set[int], np.ndarray]:
    bundle = load_bundle(model)
    scores = bundle.scorer().score_frame(data.features).score
    ids = data.record_ids[scores > bundle.threshold]
    return {int(i) for i in ids}, scores


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """True when the group's committed offsets reach the end of every partition of ``topic``."""
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in md.partitions]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])[group]
    committed = {tp.partition: tp.offset for tp in fut.result(timeout=10).topic_partitions}
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermark-probe"})
    try:
        for p in parts:
            _, high = probe.get_watermark_offsets(p, timeout=10)
            if committed.get(p.partition, -1) < high:
                return False
    finally:
        probe.close()
    return True


def alert_docs(messages: list[object]) -> list[dict[str, object]]:
    return [json.loads(m.value()) for m in messages]  # type: ignore[attr-defined]


def assert_alerted(bootstrap: str, alerts: str, expected: set[int], *, no_duplicates: bool = False,
                   extra: dict[str, object] | None = None) -> int:
    """Read the whole alert topic: the alerted record ids must be exactly ``expected``. Returns duplicates."""
    from tests.kafka_util import drain

    docs = alert_docs(drain(bootstrap, alerts, len(expected), timeout_s=180, extra=extra))
    ids = Counter(int(d["record_id"]) for d in docs)  # type: ignore[call-overload]
    missing, unexpected = expected - set(ids), set(ids) - expected
    assert not missing and not unexpected, f"{len(missing)} alerts missing, {len(unexpected)} unexpected"
    duplicates = sum(ids.values()) - len(ids)
    if no_duplicates:
        assert duplicates == 0, f"{duplicates} duplicate alerts"
    return duplicates


def start_replay(bootstrap: str, topic: str, data_path: Path, limit: int, rate: float, *extra: str,
                 log_path: Path | None = None) -> subprocess.Popen[bytes]:
    """The real replay producer CLI, paced, in the background (it must ride out the faults too)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic,
                             "--data", str(data_path), "--limit", str(limit), "--rate", str(rate), "--no-progress",
                             *extra], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
