"""One harness for running the services as operators do, used by the tests, the benchmarks, the soak and the demo.

A broker (``KAFKA_BOOTSTRAP_SERVERS`` or one started by ``deploy/kafka/local_kafka.py``), the detector and
the producer as processes of their own CLIs, readiness from ``/readyz``, the alert topic read back,
``/metrics`` scraped, and the alerts the bundle should raise computed offline for the same rows. It lives
outside the shipped packages: nothing in the image imports it (or ``deploy/``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from core import headers
from core.decision import is_anomalous
from core.kafka_io import produce, read_to_end
from core.records import Records, read_records
from deploy.kafka import local_kafka
from deploy.kafka.local_kafka import free_port

REPO = Path(__file__).resolve().parents[1]
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3"}


# ------------------------------------------------------------------------------------------- broker
@contextlib.contextmanager
def broker(bootstrap_servers: str | None = None) -> Iterator[str]:
    """The given cluster, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a local broker for the duration."""
    with local_kafka.bootstrap_or_local(bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")) as b:
        yield b


def create_topics(bootstrap: str, *specs: tuple[str, int] | tuple[str, int, dict[str, str]]) -> None:
    """Create (name, partitions[, config]) topics and wait until they exist."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(s[0], num_partitions=s[1], replication_factor=1, config=s[2] if len(s) > 2 else {})
           for s in specs]
    for fut in admin.create_topics(new, operation_timeout=30).values():
        fut.result(timeout=60)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    """Poll a condition (readiness, progress) until true; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


# ------------------------------------------------------------------------------------------ metrics
def scrape(port: int) -> dict[str, float]:
    """Flat samples of a ``/metrics`` page: ``name{k=v,...}`` -> value (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def total(samples: dict[str, float], name: str) -> float:
    """A metric summed over its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def rss_bytes(pid: int) -> int:
    """A process's resident set size, from /proc (what an OOM killer and a container limit look at)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# ----------------------------------------------------------------------------------------- services
class ServiceProcess:
    """A service CLI as a child process, ready when its ``/readyz`` says so."""

    name = "service"

    def __init__(self, args: list[str], port: int, log_path: Path | None = None, env: dict[str, str] | None = None,
                 inherit_output: bool = False) -> None:
        self.port = port
        self.args = args
        self.log_path = log_path
        self.env = env or {}
        self.inherit_output = inherit_output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 120, wait_ready: bool = True) -> ServiceProcess:
        if self.inherit_output:
            out: Any = None
        else:
            out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if out else None,
                                     env={**os.environ, **QUIET_TF, **self.env})
        if wait_ready:
            wait_until(lambda: self._alive_or_raise() and self.ready(), ready_timeout_s, f"{self.name} /readyz")
        return self

    def _alive_or_raise(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:] if self.log_path else ""
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
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
        return scrape(self.port)

    def total(self, name: str) -> float:
        return total(self.metrics(), name)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # it did not stop: its threads' stacks go to its log (core.lifecycle's SIGUSR1) before the kill
            self.proc.send_signal(signal.SIGUSR1)
            try:
                return self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class DetectorProcess(ServiceProcess):
    """``python -m detector``."""

    name = "detector"

    def __init__(self, bootstrap: str, input_topic: str, alert_topic: str, model: Path, *extra: str,
                 group: str | None = None, dlq_topic: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None, inherit_output: bool = False, port: int | None = None) -> None:
        port = port or free_port()
        super().__init__([sys.executable, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic",
                          input_topic, "--alert-topic", alert_topic, "--model", str(model), "--metrics-port",
                          str(port), "--metrics-host", "127.0.0.1", "--group-id", group or f"g-{input_topic}",
                          *(["--dlq-topic", dlq_topic] if dlq_topic else []), *extra],
                         port, log_path, env, inherit_output)


class IncidentProcess(ServiceProcess):
    """``python -m incidents run`` on the given alert topic, with topics of its own named after it."""

    name = "incident service"

    def __init__(self, bootstrap: str, alert_topic: str, *extra: str, log_path: Path | None = None,
                 port: int | None = None) -> None:
        port = port or free_port()
        self.topics = {"incident": f"{alert_topic}.incidents", "feedback": f"{alert_topic}.feedback",
                       "suppressed": f"{alert_topic}.suppressed", "state": f"{alert_topic}.incidents.state",
                       "dlq": f"{alert_topic}.incidents-dlq"}
        self.group = f"inc-{alert_topic}"
        super().__init__([sys.executable, "-m", "incidents", "run", "--bootstrap-servers", bootstrap, "--alert-topic",
                          alert_topic, "--incident-topic", self.topics["incident"], "--feedback-topic",
                          self.topics["feedback"], "--suppressed-topic", self.topics["suppressed"], "--group-id",
                          self.group, "--transactional-id", f"tx-{self.group}", "--metrics-port", str(port),
                          "--metrics-host", "127.0.0.1", *extra], port, log_path)


def latest_incidents(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """The incident topic as a compacted reader sees it: the latest record of each incident (none once pruned)."""
    latest: dict[str, bytes | None] = {}
    for m in read_to_end({"bootstrap.servers": bootstrap}, topic):
        latest[m.key().decode()] = m.value()
    return {k: json.loads(v) for k, v in latest.items() if v is not None}


def producer_args(bootstrap: str, topic: str, data_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic, "--data",
            str(data_path), "--no-progress", *extra]


def start_replay(bootstrap: str, topic: str, data_path: Path, limit: int, rate: float, *extra: str,
                 log_path: Path | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """The real replay producer CLI, paced, in the background (it must ride out the faults too)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(producer_args(bootstrap, topic, data_path, "--limit", str(limit), "--rate", str(rate),
                                          *extra),
                            cwd=REPO, stdout=stdout if stdout is not None else out, stderr=out,
                            env={**os.environ, **QUIET_TF})


def replay_summary(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Wait for a replay started with ``stdout=PIPE``; its JSON summary line."""
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the producer exited with {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- topics, rows
def produce_rows(bootstrap: str, topic: str, data: Records, bad: dict[int, bytes] | None = None) -> int:
    """Produce the rows as the replay producer does (csv, record id key and header, label header),
    with ``bad[i]`` messages inserted before row i. Returns the number of messages."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 10})
    if data.raw is None:
        raise ValueError("produce_rows needs rows read with keep_raw=True")

    def send(value: bytes, key: bytes, hdrs: list[tuple[str, bytes]]) -> None:
        produce(producer, topic, value, key, hdrs)

    n = 0
    for i, (rid, line) in enumerate(zip(data.record_ids, data.raw, strict=True)):
        if bad and i in bad:
            send(bad[i], f"bad-{i}".encode(), [(headers.RECORD_ID, f"bad-{i}".encode())])
            n += 1
        send(data.payload(line).encode(), str(rid).encode(),
             [(headers.RECORD_ID, str(rid).encode()), (headers.LABEL, line.rsplit(",", 1)[1].encode())])
        n += 1
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("produce_rows: messages still undelivered after 60 s")
    return n


def drain(bootstrap: str, topic: str, expected: int, *, timeout_s: float = 120.0, group: str | None = None,
          extra: dict[str, object] | None = None) -> list[Message]:
    """Consume ``topic`` from the start in a fresh consumer group until ``expected`` messages arrived.

    Returns early only on the expected count; a short count after ``timeout_s`` is returned as is so the
    caller's assertion shows what was missing. Keeps reading 1 s past the count to catch duplicates.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group or unique("drain"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": True,
                         "isolation.level": "read_committed", **(extra or {})})
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() > settle_until:
                break
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise AssertionError(f"consumer error on {topic}: {err}")
                out.append(msg)
            if len(out) >= expected and settle_until is None:
                settle_until = time.monotonic() + 1.0
    finally:
        consumer.close()
    return out


def _committed(bootstrap: str, group: str, topic: str) -> tuple[list[TopicPartition], dict[int, int]]:
    """The partitions of ``topic`` and the group's committed offset of each (absent: never committed)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=10).topics[topic]
    parts = [TopicPartition(topic, p) for p in md.partitions]
    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, parts)])[group]
    return parts, {tp.partition: tp.offset for tp in fut.result(timeout=10).topic_partitions}


def committed_count(bootstrap: str, group: str, topic: str) -> int:
    """The group's committed offsets over every partition of ``topic``, summed (0 where none): how far it got,
    across restarts (a process' own counters start again at zero)."""
    return sum(max(offset, 0) for offset in _committed(bootstrap, group, topic)[1].values())


def committed_all(bootstrap: str, group: str, topic: str) -> bool:
    """True when the group's committed offsets reach the end of every partition of ``topic``."""
    parts, committed = _committed(bootstrap, group, topic)
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermark-probe"})
    try:
        for p in parts:
            _, high = probe.get_watermark_offsets(p, timeout=10)
            if committed.get(p.partition, -1) < high:
                return False
    finally:
        probe.close()
    return True


# ----------------------------------------------------------------------------------------- alerts
def alert_docs(messages: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in messages]


def alert_timing(msg: Any) -> tuple[int, float, float]:
    """(record id, broker append time in s, produce-to-alert latency in ms) of one alert message.

    The alert topic must use LogAppendTime; the alert's ``event_time`` is the input record's timestamp.
    """
    doc = json.loads(msg.value())
    event_ms = dt.datetime.fromisoformat(doc["event_time"]).timestamp() * 1000
    append_ms = msg.timestamp()[1]
    return int(doc["record_id"]), append_ms / 1000, append_ms - event_ms


def alert_latencies(bootstrap: str, topic: str, idle_s: float = 5.0) -> np.ndarray:
    """Produce-to-alert latency (ms) of every alert on ``topic``, read until it has been quiet ``idle_s``."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("lat"), "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[float] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < idle_s:
        msgs = c.consume(1000, 0.5)
        if msgs:
            idle_since = time.monotonic()
        out += [alert_timing(m)[2] for m in msgs if m.error() is None]
    c.close()
    if not out:
        raise RuntimeError("no alerts arrived during the latency run")
    return np.asarray(out)


def assert_alerted(bootstrap: str, alerts: str, expected: set[int], *, no_duplicates: bool = False,
                   extra: dict[str, object] | None = None) -> int:
    """Read the whole alert topic: the alerted record ids must be exactly ``expected``. Returns duplicates."""
    docs = alert_docs(drain(bootstrap, alerts, len(expected), timeout_s=180, extra=extra))
    ids = Counter(int(d["record_id"]) for d in docs)
    missing, unexpected = expected - set(ids), set(ids) - expected
    assert not missing and not unexpected, f"{len(missing)} alerts missing, {len(unexpected)} unexpected"
    duplicates = sum(ids.values()) - len(ids)
    if no_duplicates:
        assert duplicates == 0, f"{duplicates} duplicate alerts"
    return duplicates


# ------------------------------------------------------------------------------- expected, offline
def offline_alert_ids(model: Path, data: Records) -> tuple[set[int], np.ndarray]:
    """The record ids the bundle flags among ``data`` (scored in this process), and every row's score."""
    from model.bundle import load_bundle

    bundle = load_bundle(model)
    scores = bundle.scorer().score_frame(data.features).score
    return {int(i) for i in data.record_ids[is_anomalous(scores, bundle.threshold)]}, scores


def expected_replay_alerts(model: Path, source_kwargs: dict[str, Any], delivered: int) -> Counter[int]:
    """Alerted ids for the exact sequence a replay sent: the producer's own source code, seed and first N."""
    from producer.source import SourceOptions, SourceStats, records

    opts = SourceOptions(**source_kwargs)
    flagged, _ = offline_alert_ids(model, read_records(opts.data))
    out: Counter[int] = Counter()
    for i, rec in enumerate(records(opts, SourceStats())):
        if i >= delivered:
            break
        if rec.record_id in flagged:
            out[rec.record_id] += 1
    return out


def ensure_bundle(model: Path, data: Path) -> None:
    """Train a bundle with the default preset when ``model`` has none (benchmarks and the demo)."""
    if (model / "bundle.json").exists():
        return
    subprocess.run([sys.executable, "-m", "training", "train", "--data", str(data), "--out", str(model)], cwd=REPO,
                   env={**os.environ, **QUIET_TF}, check=True)
