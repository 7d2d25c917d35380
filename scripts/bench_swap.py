"""Produce-to-alert latency while the detector hot-swaps its model, at a steady offered rate; one JSON line.

``python -m scripts.bench_swap [--model DIR] [--rate 5000] [--seconds 40]``

A model store holds the bundle and a copy of it with its threshold at the calibration rows' 90th percentile (same
weights: loading, verifying and tracing cost what any bundle of this size costs, and the alert rate
visibly changes at the swap). The detector follows the store; the producer CLI offers ``--rate``
records/s; the store's pointer moves to the copy a third of the way in and is rolled back at two
thirds. Latency is each alert's broker append time minus its input record's timestamp. Reported: p50 and
p99 over the whole run and over the five seconds after each pointer move, and the swaps the detector counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer

import testkit as harness
from core.records import default_data_path
from core.settings import MODEL_DIR
from model import store
from model.bundle import MANIFEST

log = logging.getLogger("bench_swap")


def make_store(bundle: Path, root: Path) -> tuple[str, str]:
    """The bundle and its p90-threshold copy, added to a new store; the first promoted."""
    copy = root.parent / "copy"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["version"] += "-p90"
    manifest["threshold"] = manifest["validation"]["score_quantiles_normal"]["0.9"]
    (copy / MANIFEST).write_text(json.dumps(manifest))
    first = store.add(root, harness_copy(bundle, root.parent / "first")).name
    second = store.add(root, copy).name
    store.promote(root, first)
    return first, second


def harness_copy(bundle: Path, to: Path) -> Path:
    shutil.copytree(bundle, to)
    return to


def watch(bootstrap: str, topic: str, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("swap-watch"),
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    while not stop.is_set():
        for m in c.consume(2000, 0.3):
            if m.error() is None:
                _, append_s, latency_ms = harness.alert_timing(m)
                out.append((append_s, latency_ms))
    c.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_swap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")))
    p.add_argument("--data", type=Path, default=default_data_path())
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--seconds", type=float, default=40)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    harness.ensure_bundle(args.model, args.data)
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    root = work / "models"
    first, second = make_store(args.model, root)
    latencies: list[tuple[float, float]] = []
    swaps: list[float] = []
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic, alerts = harness.unique("swap-in"), harness.unique("swap-alerts")
        harness.create_topics(bootstrap, (topic, 6), (alerts, 6, {"message.timestamp.type": "LogAppendTime"}))
        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(bootstrap, alerts, stop, latencies), daemon=True)
        with harness.DetectorProcess(bootstrap, topic, alerts, root, "--model-poll-s", "0.5") as det:
            watcher.start()
            n = int(args.rate * args.seconds)
            prod = harness.start_replay(bootstrap, topic, args.data, n, args.rate, "--loop", "--shuffle",
                                        "--anomaly-fraction", "0.01", "-X", "linger.ms=5", stdout=-1)
            for frac, action in ((1 / 3, lambda: store.promote(root, second)), (2 / 3, lambda: store.rollback(root))):
                harness.wait_until(lambda f=frac: det.total("detector_records_scored_total") >= f * n,
                                   args.seconds * 3, "replay progress")
                action()
                swaps.append(time.time())
            summary = harness.replay_summary(prod)
            time.sleep(3)
            counted = det.total("detector_model_swaps_total")
            stop.set()
            watcher.join(timeout=10)
    shutil.rmtree(work, ignore_errors=True)
    lat = np.array([v for _, v in latencies])
    at = np.array([t for t, _ in latencies])
    near = np.zeros(len(lat), dtype=bool)
    for t in swaps:
        near |= (at >= t) & (at < t + 5.0)
    print(json.dumps({
        "benchmark": "hot_swap", "offered_rps": args.rate, "producer_rps": summary["rate_per_s"],
        "alerts": len(lat), "swaps_counted": counted, "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1), "alerts_near_swaps": int(near.sum()),
        "p99_ms_near_swaps": round(float(np.percentile(lat[near], 99)), 1) if near.any() else None,
        "max_ms": round(float(lat.max()), 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
