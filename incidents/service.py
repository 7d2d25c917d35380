"""The incident service: alerts (and analysts' verdicts) in, incident records out, exactly once.

Each batch is one Kafka transaction: the records of every incident it changed (full state, keyed by
incident id, on a compacted topic), the alerts it suppressed, unreadable alerts, and the input offsets.
The compacted incident topic is therefore also the state's changelog: on start the service reads it to
its end (read_committed) and continues from the committed offsets, so a crash neither loses nor counts an
alert twice. Verdicts are re-read from the feedback topic on start (applying one twice changes nothing).

One instance serves the whole alert topic (incidents group alerts from every partition); a second instance
with the same transactional id fences the first. After aggregation the volume is small.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from core.health import HealthServer
from core.kafka import check_connection, ensure_topic
from incidents.book import Incident, IncidentBook
from incidents.metrics import IncidentMetrics
from incidents.settings import IncidentSettings

log = logging.getLogger(__name__)


class FatalError(RuntimeError):
    """A transaction could not be committed; restarting rebuilds the state from Kafka."""


def _event_ms(alert: dict[str, Any], fallback_ms: int) -> int:
    text = alert.get("event_time")
    if not text:
        return fallback_ms
    return int(dt.datetime.fromisoformat(text).timestamp() * 1000)


def read_to_end(conf: dict[str, Any], topic: str) -> list[Message]:
    """Every committed record of ``topic`` up to its end now, in offset order per partition."""
    consumer = Consumer({**conf, "group.id": f"restore-{topic}", "enable.auto.commit": False,
                        "isolation.level": "read_committed"})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {}
        for p in md.partitions:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if hi > lo:
                ends[p] = hi
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        out: list[Message] = []
        while ends:
            for msg in consumer.consume(5000, 1.0):
                if msg.error() is not None:
                    continue
                out.append(msg)
                if msg.offset() >= ends.get(msg.partition(), 0) - 1:
                    ends.pop(msg.partition(), None)
            # a transaction marker can be the last offset: stop once the position passed the end
            for tp in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends.get(tp.partition, 0):
                    ends.pop(tp.partition, None)
        return out
    finally:
        consumer.close()


class IncidentService:
    def __init__(self, settings: IncidentSettings) -> None:
        self.settings = settings
        self.book = IncidentBook(int(settings.gap_s * 1000))
        self.metrics = IncidentMetrics()
        self.stop_event = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.server: HealthServer | None = None
        self.restored = False
        self.last_input = time.monotonic()

    def ready(self) -> tuple[bool, str]:
        return (True, f"ready: {len(self.book.open)} open incidents") if self.restored else (False, "restoring")

    def start(self) -> None:
        s = self.settings
        conf = s.kafka.client_config()
        md = check_connection(conf, s.kafka.connect_timeout_s)
        self.server = HealthServer(self.metrics.registry, s.metrics_port, self.ready, host=s.metrics_host)
        self.server.start()
        replication = min(3, max(1, len(md.brokers)))
        ensure_topic(conf, s.incident_topic, 1, replication, md, {"cleanup.policy": "compact"})
        for topic in (s.feedback_topic, s.suppressed_topic, s.dead_letter_topic):
            ensure_topic(conf, topic, 1, replication, md)
        self.producer = Producer({**conf, "transactional.id": s.transactional_id, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 5, "transaction.timeout.ms": 60_000})
        self.producer.init_transactions(60)  # fences a predecessor and aborts its open transaction
        self._restore(conf)
        self.consumer = Consumer({**conf, "group.id": s.group_id, "enable.auto.commit": False,
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
        self.consumer.subscribe([s.alert_topic, s.feedback_topic])
        self.restored = True
        log.info("incident service ready: %d incidents restored (%d open), %d verdicts", len(self.book.incidents),
                 len(self.book.open), len(self.book.rules))

    def _restore(self, conf: dict[str, Any]) -> None:
        for msg in read_to_end(conf, self.settings.incident_topic):
            if msg.value():
                self.book.restore(Incident.from_dict(json.loads(msg.value())))
        for msg in read_to_end(conf, self.settings.feedback_topic):
            self._verdict(msg)
        self.metrics.open.set(len(self.book.open))

    def run(self) -> None:
        if self.consumer is None:
            self.start()
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def step(self) -> int:
        assert self.consumer is not None and self.producer is not None
        msgs = [m for m in self.consumer.consume(self.settings.batch_size, 0.5) if self._ok(m)]
        if not msgs:
            idle = time.monotonic() - self.last_input
            closed = self.book.advance(int(time.time() * 1000)) if idle >= self.settings.idle_close_s else []
            if closed:
                self._commit([self._record(inc) for inc in closed], {})
            return 0
        self.last_input = time.monotonic()
        outputs: list[tuple[str, str | None, bytes]] = []
        changed: dict[str, Incident] = {}
        for msg in msgs:
            if msg.topic() == self.settings.feedback_topic:
                self._verdict(msg)
            else:
                outputs += self._alert(msg, changed)
        for inc in self.book.close_quiet():
            changed[inc.incident_id] = inc
        self._commit(outputs + [self._record(inc) for inc in changed.values()], self._offsets(msgs))
        self.metrics.open.set(len(self.book.open))
        return len(msgs)

    @staticmethod
    def _ok(msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return True
        if err.code() != KafkaError._PARTITION_EOF:
            if err.fatal():
                raise FatalError(f"consumer: {err}")
            log.warning("consumer error: %s", err)
        return False

    def _alert(self, msg: Message, changed: dict[str, Incident]) -> list[tuple[str, str | None, bytes]]:
        s, m = self.settings, self.metrics
        try:
            alert = json.loads(msg.value() or b"")
            event_ms = _event_ms(alert, msg.timestamp()[1])
            float(alert["severity"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable alert at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            m.unreadable.inc()
            return [(s.dead_letter_topic, None, msg.value() or b"")]
        rule = self.book.suppressing(alert, event_ms)
        if rule is not None:
            m.suppressed.inc()
            kept = json.dumps({**alert, "suppressed_by": rule.incident_id}, separators=(",", ":")).encode()
            return [(s.suppressed_topic, alert.get("record_id"), kept)]
        m.alerts.inc()
        for inc in self.book.add(alert, event_ms):
            if inc.alerts == 1:
                m.opened.inc()
            changed[inc.incident_id] = inc
        return []

    def _verdict(self, msg: Message) -> None:
        try:
            verdict = json.loads(msg.value() or b"")
            incident_id, until_ms = str(verdict["incident_id"]), int(verdict["until_ms"])
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring an unreadable verdict at offset %d: %s", msg.offset(), exc)
            self.metrics.verdicts.labels(outcome="unreadable").inc()
            return
        if verdict.get("verdict") != "benign":
            self.metrics.verdicts.labels(outcome="ignored").inc()
            return
        rule = self.book.mark_benign(incident_id, until_ms)
        if rule is None:
            log.warning("verdict for unknown incident %s ignored", incident_id)
            self.metrics.verdicts.labels(outcome="unknown_incident").inc()
            return
        self.metrics.verdicts.labels(outcome="applied").inc()
        self.metrics.rules.set(len(self.book.rules))
        log.info("incident %s marked benign: alerts of kind %s up to severity %.3g suppressed until %s",
                 incident_id, "/".join(rule.kind), rule.max_severity,
                 dt.datetime.fromtimestamp(until_ms / 1000, dt.UTC).isoformat(timespec="seconds"))

    def _record(self, inc: Incident) -> tuple[str, str | None, bytes]:
        if inc.status == "closed":
            self.metrics.closed.inc()
        return self.settings.incident_topic, inc.incident_id, json.dumps(inc.to_dict(), separators=(",", ":")).encode()

    @staticmethod
    def _offsets(msgs: list[Message]) -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for m in msgs:
            key = (m.topic(), m.partition())
            out[key] = max(out.get(key, -1), m.offset() + 1)
        return out

    def _commit(self, outputs: list[tuple[str, str | None, bytes]], offsets: dict[tuple[str, int], int]) -> None:
        assert self.producer is not None and self.consumer is not None
        try:
            self.producer.begin_transaction()
            for topic, key, value in outputs:
                while True:
                    try:
                        self.producer.produce(topic, value=value, key=key.encode() if key else None)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            if offsets:
                tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
                self.producer.send_offsets_to_transaction(tps, self.consumer.consumer_group_metadata(), 30)
            self.producer.commit_transaction(60)
        except Exception as exc:
            # the in-memory book is ahead of Kafka now: only a restart (which restores from Kafka) is exact
            raise FatalError(f"incident transaction not committed ({exc}); restart to restore from Kafka") from exc
