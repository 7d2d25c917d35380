"""Soak: one long replay at a steady rate through a detector process; is anything lost, does memory creep?

``python -m detector.soak [--minutes 10] [--rate 5000] [--model DIR]`` prints one JSON line and exits
0 when every target holds, 1 when one is missed (named on stderr), 2 on bad arguments or a missing bundle.

What it runs, as operators would: the replay producer CLI (``--loop --shuffle --anomaly-fraction 0.01``,
paced at ``--rate``) and the detector CLI, against ``KAFKA_BOOTSTRAP_SERVERS`` or a local broker it starts.
What it checks:

* nothing lost: records delivered by the producer == consumed by the detector == scored + dead-lettered,
  and the multiset of alerted record ids equals the one computed offline for the exact replayed sequence
  (the soak regenerates it with the producer's own source code and scores it with the bundle);
* memory flat: the detector's RSS (from /proc), sampled every few seconds after ``--warmup-s``, never
  exceeds the post-warm-up baseline by more than ``--rss-tolerance`` (10%);
* latency: produce-to-alert p99 (broker append time of the alert minus the input record's timestamp), over
  the whole run and per minute, within ``--p99-target-ms`` (100 ms, the detector's target).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer
from prometheus_client.parser import text_string_to_metric_families

from detector.benchmark import alert_timing
from training import cli_env
from training.kdd99 import default_data_path

log = logging.getLogger("detector.soak")
REPO = Path(__file__).resolve().parents[1]


class AlertWatcher(threading.Thread):
    """Reads the alert topic while the soak runs: latency per alert and the alerted record ids."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="alert-watcher", daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-watch-{uuid.uuid4().hex[:8]}",
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
                record_id, append_s, latency_ms = alert_timing(m)
                with self.lock:
                    self.ids[record_id] += 1
                    self.latency.append((append_s, latency_ms))
        self.consumer.close()

    def count(self) -> int:
        with self.lock:
            return sum(self.ids.values())


def scrape(port: int) -> dict[str, float]:
    """The detector's /metrics, summed by metric name (labels dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
        text = r.read().decode()
    out: dict[str, float] = Counter()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] += s.value
    return dict(out)


def rss_bytes(pid: int) -> int:
    """A process's resident set size, from /proc (what an OOM killer and a container limit look at)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def expected_alert_ids(model: Path, source_kwargs: dict[str, Any], delivered: int) -> Counter[int]:
    """Alerted ids for the exact sequence the producer sent: its source code, its seed, its first N."""
    from producer.source import SourceOptions, SourceStats, records
    from training.bundle import load_bundle
    from training.kdd99 import read_kdd

    opts = SourceOptions(**source_kwargs)
    data = read_kdd(opts.data)
    bundle = load_bundle(model)
    flagged = bundle.scorer().score_frame(data.features).score > bundle.threshold
    flagged_by_id = dict(zip(data.record_ids.tolist(), flagged.tolist(), strict=True))
    out: Counter[int] = Counter()
    for i, rec in enumerate(records(opts, SourceStats())):
        if i >= delivered:
            break
        if flagged_by_id[rec.record_id]:
            out[rec.record_id] += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detector.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli_env.add(p, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", help="cluster (default: start a local broker)")
    cli_env.add(p, "--model", "MODEL_DIR", default=Path("artifacts/model"), type=Path, help="model bundle")
    cli_env.add(p, "--data", "KDD_DATA", default=default_data_path(), type=Path, help="KDD file to replay")
    cli_env.add(p, "--minutes", "SOAK_MINUTES", default=10.0, type=float, help="length of the steady replay")
    cli_env.add(p, "--rate", "SOAK_RATE", default=5000.0, type=float, help="records per second offered")
    cli_env.add(p, "--warmup-s", "SOAK_WARMUP_S", default=60.0, type=float,
                help="seconds before the RSS baseline is taken")
    cli_env.add(p, "--rss-tolerance", "SOAK_RSS_TOLERANCE", default=0.10, type=float,
                help="allowed RSS growth over the baseline, as a fraction")
    cli_env.add(p, "--p99-target-ms", "SOAK_P99_TARGET_MS", default=100.0, type=float, help="latency target")
    cli_env.add(p, "--partitions", "SOAK_PARTITIONS", default=6, type=int, help="input topic partitions")
    cli_env.add(p, "--sample-s", "SOAK_SAMPLE_S", default=5.0, type=float, help="RSS/metrics sampling period")
    return p


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear script, read top to bottom
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not (args.model / "bundle.json").exists():
        log.error("no model bundle at %s; train one with `python -m training train --out %s`", args.model, args.model)
        return 2
    if not args.data.exists():
        log.error("KDD data file %s does not exist; pass --data PATH or set KDD_DATA", args.data)
        return 2
    if args.minutes <= 0 or args.rate <= 0:
        log.error("--minutes and --rate must be positive")
        return 2
    from confluent_kafka.admin import AdminClient, NewTopic

    from deploy.kafka.local_kafka import bootstrap_or_local, free_port

    n = int(args.rate * args.minutes * 60)
    source_kwargs = {"data": args.data, "shuffle": True, "seed": 0, "loop": True, "limit": n,
                     "anomaly_fraction": 0.01}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with bootstrap_or_local(args.bootstrap_servers) as bootstrap:
        suffix = uuid.uuid4().hex[:8]
        topic, alerts = f"soak-in-{suffix}", f"soak-alerts-{suffix}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([
            NewTopic(topic, num_partitions=args.partitions, replication_factor=1),
            NewTopic(alerts, num_partitions=args.partitions, replication_factor=1,
                     config={"message.timestamp.type": "LogAppendTime"}),
        ]).values():
            f.result(timeout=60)
        port = free_port()
        det = subprocess.Popen([sys.executable, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic",
                                topic, "--alert-topic", alerts, "--model", str(args.model), "--metrics-port",
                                str(port), "--metrics-host", "127.0.0.1", "--group-id", f"soak-{suffix}"],
                               cwd=REPO, env=env)
        watcher = AlertWatcher(bootstrap, alerts)
        samples: list[dict[str, float]] = []
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:  # noqa: S310
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if det.poll() is not None or time.monotonic() > deadline:
                    log.error("the detector did not become ready (exit code %s)", det.poll())
                    return 1
                time.sleep(0.5)
            watcher.start()
            log.info("soak: %d records at %.0f/s (%.1f min) into %s", n, args.rate, args.minutes, topic)
            prod = subprocess.Popen([sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic",
                                     topic, "--data", str(args.data), "--rate", str(args.rate), "--limit", str(n),
                                     "--loop", "--shuffle", "--anomaly-fraction", "0.01", "--no-progress",
                                     "-X", "linger.ms=5"], cwd=REPO, env=env, stdout=subprocess.PIPE)
            t0 = time.monotonic()
            next_log = t0 + 30
            while prod.poll() is None:
                time.sleep(args.sample_s)
                m = scrape(port)
                samples.append({"t": time.monotonic() - t0, "rss": rss_bytes(det.pid),
                                "scored": m.get("detector_records_scored_total", 0.0)})
                if time.monotonic() >= next_log:
                    next_log += 30
                    log.info("%4.0fs: %d scored, %d alerts seen, RSS %.0f MiB", samples[-1]["t"],
                             samples[-1]["scored"], watcher.count(), samples[-1]["rss"] / 2**20)
            assert prod.stdout is not None
            summary = json.loads(prod.stdout.read().decode().strip().splitlines()[-1])
            delivered = int(summary["delivered"])
            log.info("producer done: %s", summary)
            wait_until = time.monotonic() + 120
            while scrape(port).get("detector_records_consumed_total", 0) < delivered:
                if time.monotonic() > wait_until:
                    break
                time.sleep(1)
            m = scrape(port)
            expected = expected_alert_ids(args.model, source_kwargs, delivered)
            wait_until = time.monotonic() + 60
            while watcher.count() < sum(expected.values()) and time.monotonic() < wait_until:
                time.sleep(0.5)
            time.sleep(2)  # settle: let a duplicate, if any, arrive too
        finally:
            watcher.stop_event.set()
            det.send_signal(signal.SIGTERM)
            try:
                det_rc = det.wait(timeout=60)
            except subprocess.TimeoutExpired:
                det.kill()
                det_rc = -9
        watcher.join(timeout=10)

    # ---------------------------------------------------------------------------------- verdict
    rss = np.array([s["rss"] for s in samples if s["t"] >= args.warmup_s])
    times = np.array([s["t"] for s in samples if s["t"] >= args.warmup_s])
    baseline = float(rss[0]) if len(rss) else float("nan")
    growth = float(rss.max() / baseline - 1) if len(rss) else float("nan")
    slope = float(np.polyfit(times / 60, rss / 2**20, 1)[0]) if len(rss) > 2 else float("nan")
    lat = np.array([v for _, v in watcher.latency])
    append = np.array([t for t, _ in watcher.latency])
    minute_p99 = []
    if len(lat):
        start = append.min()
        for k in range(int((append.max() - start) // 60) + 1):
            sel = (append >= start + 60 * k) & (append < start + 60 * (k + 1))
            if sel.sum() >= 50:
                minute_p99.append(round(float(np.percentile(lat[sel], 99)), 1))
    consumed = m.get("detector_records_consumed_total", 0.0)
    scored, dead = m.get("detector_records_scored_total", 0.0), m.get("detector_dead_letters_total", 0.0)
    missing = sum((expected - watcher.ids).values())
    duplicates = sum((watcher.ids - expected).values())
    result = {
        "soak": "detector", "minutes": args.minutes, "offered_rps": args.rate, "producer_rps": summary["rate_per_s"],
        "delivered": delivered, "consumed": int(consumed), "scored": int(scored), "dead_lettered": int(dead),
        "alerts_expected": sum(expected.values()), "alerts_seen": watcher.count(), "alerts_missing": missing,
        "alerts_duplicated": duplicates, "rss_baseline_mib": round(baseline / 2**20, 1),
        "rss_max_mib": round(float(rss.max()) / 2**20, 1) if len(rss) else None,
        "rss_growth": round(growth, 4), "rss_slope_mib_per_min": round(slope, 3),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
        "p99_ms_per_minute_max": max(minute_p99) if minute_p99 else None, "p99_ms_per_minute": minute_p99,
        "detector_exit_code": det_rc,
    }
    print(json.dumps(result))
    failures = []
    if not (consumed == delivered == scored + dead):
        failures.append(f"records: delivered {delivered}, consumed {consumed}, scored+dead {scored + dead}")
    if missing or duplicates:
        failures.append(f"alerts: {missing} missing, {duplicates} duplicated")
    if not growth <= args.rss_tolerance:
        failures.append(f"RSS grew {growth:.1%} over the baseline (tolerance {args.rss_tolerance:.0%})")
    if result["p99_ms"] is None or result["p99_ms"] > args.p99_target_ms:
        failures.append(f"p99 {result['p99_ms']} ms over the {args.p99_target_ms:.0f} ms target")
    if det_rc != 0:
        failures.append(f"detector exited with {det_rc} on SIGTERM")
    for f in failures:
        log.error("soak target missed: %s", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
