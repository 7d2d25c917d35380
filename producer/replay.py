"""The replay loop: records onto Kafka with exact accounting of what was sent, delivered and failed.

Delivery reports are the only proof a record arrived, so every produce() carries a callback and the
totals come from the callbacks, not from the loop. On SIGINT/SIGTERM the loop stops taking new records,
flushes what is in flight, and reports; the caller exits non-zero if any delivery failed.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from confluent_kafka import KafkaError, Producer

from core import wire, zeek
from core.kafka import is_authorization_error
from core.kafka_io import produce
from producer.metrics import ProducerMetrics
from producer.pacing import Pacer
from producer.source import SourceOptions, SourceStats, records

log = logging.getLogger(__name__)

# Throughput-oriented defaults; -X overrides any of them.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "message.timeout.ms": 120_000,
}


@dataclasses.dataclass
class ReplayResult:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    failures_by_reason: Counter[str] = dataclasses.field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False
    source: SourceStats = dataclasses.field(default_factory=SourceStats)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "delivered": self.delivered, "failed": self.failed,
            "failures_by_reason": dict(self.failures_by_reason),
            "malformed_lines_skipped": self.source.malformed,
            "malformed_by_reason": dict(self.source.malformed_by_reason),
            "attacks_dropped_by_anomaly_fraction": self.source.dropped_by_anomaly_fraction,
            "seconds": round(self.seconds, 3), "rate_per_s": round(self.rate, 1), "interrupted": self.interrupted,
        }


class Replayer:
    def __init__(self, client_config: dict[str, Any], topic: str, source: SourceOptions, rate: float,
                 progress: bool | None = None, metrics: ProducerMetrics | None = None,
                 label_header: bool = True, speedup: float = 0.0, event_span: tuple[float, int] | None = None
                 ) -> None:
        self.topic = topic
        self.event_span = event_span  # (records per second of event time, records): back-dated timestamps
        self.speedup = speedup  # Zeek replays: 1 keeps the capture's own pace, N is N times faster, 0 ignores ts
        self.first_ts: float | None = None
        self.label_header = label_header
        self.source = source
        self.pacer = Pacer(rate)
        self.config = {**PRODUCER_DEFAULTS, **client_config}  # a copy: never mutate the caller's dict
        self.stop_event = threading.Event()
        self.result = ReplayResult()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.metrics = metrics
        if metrics is not None:
            metrics.target_rate.set(rate)
        self.denied: KafkaError | None = None  # an ACL refused a write: the replay stops (exit 3)

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.result.delivered += 1
        else:
            self.result.failed += 1
            self.result.failures_by_reason[err.name()] += 1
            if is_authorization_error(err) and self.denied is None:
                self.denied = err  # every later record would be refused too: stop sending
                self.stop_event.set()
            if self.metrics is not None:
                self.metrics.failed.labels(topic=self.topic, reason=err.name()).inc()

    def _keep_pace(self, producer: Producer, ts: float, t0: float) -> None:
        """Hold a record until its time in the capture, ``speedup`` times faster than it happened."""
        if self.first_ts is None:
            self.first_ts = ts
        due = t0 + max(0.0, ts - self.first_ts) / self.speedup
        while not self.stop_event.is_set() and time.monotonic() < due:
            producer.poll(min(0.1, max(0.0, due - time.monotonic())))

    def _publish_metrics(self, last: tuple[int, int, int]) -> tuple[int, int, int]:
        """Move the counters forward by what happened since ``last`` (sent, delivered, malformed)."""
        res, m = self.result, self.metrics
        now = (res.sent, res.delivered, res.source.malformed)
        if m is not None:
            m.sent.labels(topic=self.topic).inc(now[0] - last[0])
            m.delivered.labels(topic=self.topic).inc(now[1] - last[1])
            m.malformed.inc(now[2] - last[2])
        return now

    def run(self) -> ReplayResult:
        producer = Producer(self.config)
        res = self.result
        it = records(self.source, res.source)
        first = next(it, None)  # read the first chunk before the clock starts: pacing is about sending
        if first is not None:
            it = itertools.chain([first], it)
        self.pacer.restart()
        t0 = time.monotonic()
        bar = _progress_bar(self.source.limit) if self.progress else None
        next_log = t0 + 5.0
        published = (0, 0, 0)
        topic = self.topic
        on_delivery = self._on_delivery
        stamps = _event_times(self.event_span)  # None: stamped with the wall clock
        try:
            exhausted = False
            while not exhausted and not self.stop_event.is_set():
                batch = self.pacer.allowance()
                now_ms = int(time.time() * 1000)
                for _ in range(batch):
                    rec = next(it, None)
                    if rec is None:
                        exhausted = True
                        break
                    key, value, headers = wire.encode(rec.record_id, rec.value,
                                                      rec.label if self.label_header else None)
                    if rec.fields is not None:
                        headers.append((zeek.FIELDS_HEADER, rec.fields.encode()))
                    if self.speedup and rec.ts is not None:
                        self._keep_pace(producer, rec.ts, t0)
                    if stamps is not None:
                        now_ms = next(stamps)
                    produce(producer, topic, value, key, headers, on_delivery, now_ms)
                    res.sent += 1
                producer.poll(0)
                published = self._publish_metrics(published)
                if bar is not None:
                    bar.update(res.sent - bar.n)
                elif time.monotonic() >= next_log:
                    log.info("sent %d, delivered %d, failed %d, %.0f records/s", res.sent, res.delivered,
                             res.failed, res.sent / (time.monotonic() - t0))
                    next_log += 5.0
            res.interrupted = self.stop_event.is_set()
        finally:
            remaining = producer.flush(60)
            while remaining and not self.stop_event.is_set():
                log.warning("%d records still in flight; waiting for the broker", remaining)
                remaining = producer.flush(30)
            res.seconds = time.monotonic() - t0
            self._publish_metrics(published)
            if bar is not None:
                bar.update(res.sent - bar.n)
                bar.close()
        if res.delivered + res.failed != res.sent:
            res.failures_by_reason["not_acknowledged"] += res.sent - res.delivered - res.failed
            res.failed = res.sent - res.delivered
        return res


def _event_times(span: tuple[float, int] | None) -> Iterator[int] | None:
    """Timestamps of a replay compressed into event time (``--event-rate``): ``count`` records at
    ``rate`` a second, ending now, so that windows and baselines see the traffic's own pace."""
    if span is None:
        return None
    rate, count = span
    start = time.time() * 1000 - count * 1000 / rate
    return (int(start + i * 1000 / rate) for i in itertools.count())


def _progress_bar(total: int | None) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", unit_scale=True, dynamic_ncols=True, desc="replay")
