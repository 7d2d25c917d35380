"""Soak: one long replay at a steady rate through a detector process; is anything lost, does memory creep?

``python -m scripts.soak [--minutes 10] [--rate 5000] [--model DIR]`` prints one JSON line and exits 0 when
every target holds, 1 when one is missed (named on stderr), 2 on bad arguments or a missing bundle.

What it runs, as operators would: the replay producer CLI (``--loop --shuffle --anomaly-fraction 0.01``,
paced at ``--rate``) and the detector CLI, against ``KAFKA_BOOTSTRAP_SERVERS`` or a local broker it starts.
What it checks:

* nothing lost: records delivered by the producer == consumed by the detector == scored + dead-lettered,
  and the multiset of alerted record ids equals the one computed offline for the exact replayed sequence
  (regenerated with the producer's own source code and scored with the bundle);
* memory flat: the detector's RSS, sampled every few seconds after ``--warmup-s``, never exceeds the
  post-warm-up baseline by more than ``--rss-tolerance`` (10%);
* latency: produce-to-alert p99 (broker append time of the alert minus the input record's timestamp), over
  the whole run and per minute, within ``--p99-target-ms`` (100 ms, the detector's target).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer
from pydantic import Field
from pydantic_settings import SettingsConfigDict

import testkit as harness
from core import settings as cli
from core.records import DATA_ENV, default_data_path
from core.settings import MODEL_DIR, Settings, SettingsError

log = logging.getLogger("soak")


class SoakSettings(Settings):
    """A steady replay through a detector process, checked for loss, memory growth and latency."""

    model_config = SettingsConfigDict(env_prefix="SOAK_")

    bootstrap_servers: str | None = Field(None, validation_alias="KAFKA_BOOTSTRAP_SERVERS",
                                          description="cluster (default: start a local broker)")
    model: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR, description="model bundle")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV, description="file to replay")
    minutes: float = Field(10.0, gt=0, description="length of the steady replay")
    rate: float = Field(5000.0, gt=0, description="records per second offered")
    warmup_s: float = Field(60.0, ge=0, description="seconds before the RSS baseline is taken")
    rss_tolerance: float = Field(0.10, gt=0, description="allowed RSS growth over the baseline, as a fraction")
    p99_target_ms: float = Field(100.0, gt=0, description="latency target")
    partitions: int = Field(6, ge=1, description="input topic partitions")
    sample_s: float = Field(5.0, gt=0, description="RSS/metrics sampling period")


class AlertWatcher(threading.Thread):
    """Reads the alert topic while the soak runs: latency per alert and the alerted record ids."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="alert-watcher", daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("soak-watch"),
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.consumer.subscribe([topic])
        self.ids: Counter[int] = Counter()
        self.latency: list[tuple[float, float]] = []  # (append time s, latency ms)
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for m in self.consumer.consume(2000, 0.5):
                if m.error() is not None:
                    continue
                record_id, append_s, latency_ms = harness.alert_timing(m)
                with self.lock:
                    self.ids[record_id] += 1
                    self.latency.append((append_s, latency_ms))
        self.consumer.close()

    def count(self) -> int:
        with self.lock:
            return sum(self.ids.values())


def replay(s: SoakSettings, bootstrap: str, topic: str, det: harness.DetectorProcess, watcher: AlertWatcher,
           n: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Run the paced replay to the end, sampling the detector's RSS and progress; the producer's summary."""
    prod = harness.start_replay(bootstrap, topic, s.data, n, s.rate, "--loop", "--shuffle", "--anomaly-fraction",
                                "0.01", "-X", "linger.ms=5", stdout=-1)
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    next_log = t0 + 30
    while prod.poll() is None:
        time.sleep(s.sample_s)
        samples.append({"t": time.monotonic() - t0, "rss": det.rss_bytes(),
                        "scored": det.total("detector_records_scored_total")})
        if time.monotonic() >= next_log:
            next_log += 30
            log.info("%4.0fs: %d scored, %d alerts seen, RSS %.0f MiB", samples[-1]["t"], samples[-1]["scored"],
                     watcher.count(), samples[-1]["rss"] / 2**20)
    return harness.replay_summary(prod), samples


def run(s: SoakSettings) -> tuple[dict[str, Any], list[dict[str, float]], dict[str, float], Counter[int],
                                  AlertWatcher, int]:
    n = int(s.rate * s.minutes * 60)
    source_kwargs = {"data": s.data, "shuffle": True, "seed": 0, "loop": True, "limit": n, "anomaly_fraction": 0.01}
    with harness.broker(s.bootstrap_servers) as bootstrap:
        topic, alerts = harness.unique("soak-in"), harness.unique("soak-alerts")
        harness.create_topics(bootstrap, (topic, s.partitions),
                              (alerts, s.partitions, {"message.timestamp.type": "LogAppendTime"}))
        watcher = AlertWatcher(bootstrap, alerts)
        det = harness.DetectorProcess(bootstrap, topic, alerts, s.model, inherit_output=True)
        try:
            det.start(ready_timeout_s=180)
            watcher.start()
            log.info("soak: %d records at %.0f/s (%.1f min) into %s", n, s.rate, s.minutes, topic)
            summary, samples = replay(s, bootstrap, topic, det, watcher, n)
            delivered = int(summary["delivered"])
            log.info("producer done: %s", summary)
            harness.wait_until(lambda: det.total("detector_records_consumed_total") >= delivered, 120,
                               "the detector to consume everything")
            final = det.metrics()
            expected = harness.expected_replay_alerts(s.model, source_kwargs, delivered)
            deadline = time.monotonic() + 60
            while watcher.count() < sum(expected.values()) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(2)  # settle: let a duplicate, if any, arrive too
        finally:
            watcher.stop_event.set()
            rc = det.stop()
        watcher.join(timeout=10)
    return summary, samples, final, expected, watcher, rc


def verdict(s: SoakSettings, summary: dict[str, Any], samples: list[dict[str, float]], m: dict[str, float],
            expected: Counter[int], watcher: AlertWatcher, det_rc: int) -> tuple[dict[str, Any], list[str]]:
    after = [x for x in samples if x["t"] >= s.warmup_s]
    rss = np.array([x["rss"] for x in after])
    times = np.array([x["t"] for x in after])
    baseline = float(rss[0]) if len(rss) else float("nan")
    growth = float(rss.max() / baseline - 1) if len(rss) else float("nan")
    slope = float(np.polyfit(times / 60, rss / 2**20, 1)[0]) if len(rss) > 2 else float("nan")
    lat = np.array([v for _, v in watcher.latency])
    append = np.array([t for t, _ in watcher.latency])
    minute_p99 = []
    if len(lat):
        for k in range(int((append.max() - append.min()) // 60) + 1):
            sel = (append >= append.min() + 60 * k) & (append < append.min() + 60 * (k + 1))
            if sel.sum() >= 50:
                minute_p99.append(round(float(np.percentile(lat[sel], 99)), 1))
    delivered = int(summary["delivered"])
    consumed = harness.total(m, "detector_records_consumed_total")
    scored, dead = harness.total(m, "detector_records_scored_total"), harness.total(m, "detector_dead_letters_total")
    missing, duplicates = sum((expected - watcher.ids).values()), sum((watcher.ids - expected).values())
    p99 = round(float(np.percentile(lat, 99)), 1) if len(lat) else None
    result = {
        "soak": "detector", "minutes": s.minutes, "offered_rps": s.rate, "producer_rps": summary["rate_per_s"],
        "delivered": delivered, "consumed": int(consumed), "scored": int(scored), "dead_lettered": int(dead),
        "alerts_expected": sum(expected.values()), "alerts_seen": watcher.count(), "alerts_missing": missing,
        "alerts_duplicated": duplicates, "rss_baseline_mib": round(baseline / 2**20, 1),
        "rss_max_mib": round(float(rss.max()) / 2**20, 1) if len(rss) else None,
        "rss_growth": round(growth, 4), "rss_slope_mib_per_min": round(slope, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None, "p99_ms": p99,
        "p99_ms_per_minute_max": max(minute_p99) if minute_p99 else None, "p99_ms_per_minute": minute_p99,
        "detector_exit_code": det_rc,
    }
    failures = []
    if not (consumed == delivered == scored + dead):
        failures.append(f"records: delivered {delivered}, consumed {consumed}, scored+dead {scored + dead}")
    if missing or duplicates:
        failures.append(f"alerts: {missing} missing, {duplicates} duplicated")
    if not growth <= s.rss_tolerance:
        failures.append(f"RSS grew {growth:.1%} over the baseline (tolerance {s.rss_tolerance:.0%})")
    if p99 is None or p99 > s.p99_target_ms:
        failures.append(f"p99 {p99} ms over the {s.p99_target_ms:.0f} ms target")
    if det_rc != 0:
        failures.append(f"detector exited with {det_rc} on SIGTERM")
    return result, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(p, SoakSettings)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        s = cli.from_namespace(SoakSettings, args)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    if not (s.model / "bundle.json").exists() or not s.data.exists():
        log.error("need a model bundle at %s (`python -m training train --out %s`) and data at %s", s.model, s.model,
                  s.data)
        return 2
    result, failures = verdict(s, *run(s))
    print(json.dumps(result))
    for f in failures:
        log.error("soak target missed: %s", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
