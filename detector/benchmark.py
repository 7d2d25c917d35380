"""Detector throughput and latency on this machine; prints one JSON line.

``python -m detector.benchmark [--model DIR] [--records N] [--rate R] [--latency-seconds S]``

1. Pre-fills a topic with N (default 1,000,000) replayed records: the 10% file looped, attacks
   subsampled to 1% of the stream as the lab did (a realistic share; with the raw file's 80% attacks
   nearly every record would be an alert).
2. ``raw_consume_rps``: a consumer with the detector's client settings drains it and discards.
3. ``detector_rps``: the detector (same code as the service, in this process) drains it: parse, score,
   publish alerts, commit. ``ratio`` = detector / raw.
4. Latency: a producer process offers R (default 10,000) records/s for S seconds while a detector
   process runs (``--shuffle`` makes the producer read the file once, up front, so no parsing competes
   with pacing during the run); the alert topic uses broker append time, so each alert's latency is its append time
   minus the input record's timestamp (set when the producer sent it): produce-to-alert, measured
   outside the detector.

Without KAFKA_BOOTSTRAP_SERVERS a local broker is started and stopped. Without a bundle at --model one
is trained with the default preset first.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer

from detector.config import DetectorConfig
from producer.kafka_options import KafkaOptions, ensure_topic
from producer.replay import Replayer
from producer.source import SourceOptions
from training.kdd99 import default_data_path

log = logging.getLogger("detector.benchmark")
REPO = Path(__file__).resolve().parents[1]


def _prefill(bootstrap: str, topic: str, data: Path, n: int, rate: float = 0.0, extra: dict | None = None) -> None:
    source = SourceOptions(data=data, loop=True, limit=n, anomaly_fraction=0.01)
    res = Replayer({"bootstrap.servers": bootstrap, **(extra or {})}, topic, source, rate=rate, progress=False).run()
    if res.delivered != n:
        raise RuntimeError(f"pre-fill delivered {res.delivered} of {n}")


def _raw_consume(config: DetectorConfig, n: int) -> float:
    from detector.service import client_configs

    consumer_conf, _ = client_configs(config)  # the detector's exact consumer settings
    consumer_conf = {**consumer_conf, "group.id": f"raw-{uuid.uuid4().hex[:8]}"}
    consumer = Consumer(consumer_conf)
    consumer.subscribe([config.input_topic])
    got = 0
    t0 = None
    while got < n:
        msgs = consumer.consume(num_messages=config.batch_size, timeout=config.batch_timeout_ms / 1000)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                m.value()
                got += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return got / elapsed


def _detector_drain(config: DetectorConfig, n: int) -> tuple[float, str]:
    from detector.service import Detector

    det = Detector(config)
    det.start()
    handled = 0
    t0 = None
    try:
        while handled < n:
            k = det.step()
            if k and t0 is None:
                t0 = time.perf_counter()
            handled += k
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    finally:
        det.close()
    return handled / elapsed, det.device


def _latency(bootstrap: str, model: Path, data: Path, rate: float, seconds: float) -> dict[str, float]:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-lat-in-{uuid.uuid4().hex[:8]}"
    alerts = f"bench-lat-alerts-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([
        NewTopic(topic, num_partitions=6, replication_factor=1),
        NewTopic(alerts, num_partitions=6, replication_factor=1, config={"message.timestamp.type": "LogAppendTime"}),
    ])
    for f in futures.values():
        f.result(timeout=60)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    det = subprocess.Popen([sys.executable, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic", topic,
                            "--alert-topic", alerts, "--model", str(model), "--metrics-port", "0",
                            "--auto-offset-reset", "latest"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        # ready when it logs its assignment (the metrics port is random here)
        deadline = time.monotonic() + 120
        assert det.stderr is not None
        for line in det.stderr:
            if "assigned [" in line:
                break
            if time.monotonic() > deadline or det.poll() is not None:
                raise RuntimeError("detector did not start for the latency run")
        n = int(rate * seconds)
        prod = subprocess.run([sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic,
                               "--data", str(data), "--rate", str(rate), "--limit", str(n), "--loop", "--shuffle",
                               "--anomaly-fraction", "0.01", "-X", "linger.ms=5"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=seconds * 3 + 120)
        if prod.returncode != 0:
            raise RuntimeError(f"producer failed: {prod.stderr[-1500:]}")
        offered = json.loads(prod.stdout.strip().splitlines()[-1])["rate_per_s"]
        lat = _alert_latencies(bootstrap, alerts)
    finally:
        det.send_signal(signal.SIGTERM)
        try:
            det.wait(timeout=60)
        except subprocess.TimeoutExpired:
            det.kill()
    return {"offered_rps": offered, "alerts": len(lat), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(np.max(lat))}


def alert_timing(msg: Any) -> tuple[int, float, float]:
    """(record id, broker append time in s, produce-to-alert latency in ms) of one alert message.

    The alert topic must use LogAppendTime; the alert's ``event_time`` is the input record's timestamp.
    """
    doc = json.loads(msg.value())
    event_ms = dt.datetime.fromisoformat(doc["event_time"]).timestamp() * 1000
    append_ms = msg.timestamp()[1]
    return int(doc["record_id"]), append_ms / 1000, append_ms - event_ms


def _alert_latencies(bootstrap: str, topic: str) -> np.ndarray:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    out: list[float] = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 5:
        msgs = c.consume(1000, 0.5)
        if msgs:
            idle_since = time.monotonic()
        for m in msgs:
            if m.error() is not None:
                continue
            out.append(alert_timing(m)[2])
    c.close()
    if not out:
        raise RuntimeError("no alerts arrived during the latency run")
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    p.add_argument("--model", type=Path, default=Path(os.environ.get("MODEL_DIR", "artifacts/model")))
    p.add_argument("--data", type=Path, default=default_data_path())
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--partitions", type=int, default=6)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not (args.model / "bundle.json").exists():
        from training.model import ModelConfig
        from training.train import TrainOptions, train

        log.info("no bundle at %s: training one with the default preset", args.model)
        train(TrainOptions(data=args.data, out=args.model, model=ModelConfig.from_preset("default")))
    from deploy.kafka.local_kafka import bootstrap_or_local

    with bootstrap_or_local(args.bootstrap_servers) as bootstrap:
        topic = f"bench-in-{uuid.uuid4().hex[:8]}"
        ensure_topic({"bootstrap.servers": bootstrap}, topic, args.partitions, 1)
        log.info("pre-filling %s with %d records", topic, args.records)
        t0 = time.monotonic()
        _prefill(bootstrap, topic, args.data, args.records)
        log.info("pre-filled in %.0fs", time.monotonic() - t0)
        config = DetectorConfig(kafka=KafkaOptions(bootstrap), input_topic=topic,
                                alert_topic=f"bench-alerts-{uuid.uuid4().hex[:8]}", model=args.model,
                                group_id=f"bench-{uuid.uuid4().hex[:8]}", metrics_port=0)
        raw = _raw_consume(config, args.records)
        log.info("raw consume: %.0f records/s", raw)
        rps, device = _detector_drain(config, args.records)
        log.info("detector: %.0f records/s on %s", rps, device)
        lat = _latency(bootstrap, args.model, args.data, args.rate, args.latency_seconds)
        log.info("latency at %.0f/s offered: p50 %.1f ms, p99 %.1f ms", lat["offered_rps"], lat["p50_ms"],
                 lat["p99_ms"])
    result = {
        "benchmark": "detector", "records": args.records, "detector_rps": round(rps), "raw_consume_rps": round(raw),
        "ratio": round(rps / raw, 3), "p50_ms": round(lat["p50_ms"], 1), "p99_ms": round(lat["p99_ms"], 1),
        "latency_offered_rps": lat["offered_rps"], "latency_alerts": lat["alerts"], "device": device,
        "batch_size": config.batch_size, "batch_timeout_ms": config.batch_timeout_ms,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k in ("batch_size", "batch_timeout_ms")},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
