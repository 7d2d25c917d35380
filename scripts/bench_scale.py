"""Scale-out on this machine (issue 32): throughput through 1, 2 and 4 instances, against a bare consumer.

``python -m scripts.bench_scale [--alerts N] [--records N] [--instances 1,2,4]`` prints one JSON line.

1. Incident service. A topic of ``--partitions`` (4) partitions is pre-filled with N (default 200,000)
   alerts of ``--kinds`` (2,000) kinds, keyed by route as the detector writes them. A bare consumer drains it
   (``raw_alerts_per_s``); then, for each instance count k, k incident services (``python -m incidents run``, one
   group, each with its own transactional id and static member id, as the StatefulSet runs them) file every
   alert into incidents with their own topics. ``alerts_per_s`` is measured from the group's committed offsets
   between 10% and 90% of the alerts (start-up and restore are not in it); ``scaling`` is k instances' rate
   over one instance's, ``ratio`` over the bare consumer's.
2. Detector. ``--records`` (default 300,000) replayed records on 6 partitions; ``scripts.bench_detector``'s
   drains: the bare consumer in a fresh interpreter, then k detector processes in one group
   (``records_per_s``, ``scaling``, ``ratio``).

Every instance competes for this machine's cores (``cores`` in the JSON): past that count, more instances
cannot run faster here; the figures say how far the work spreads, not what k machines would do.
Without KAFKA_BOOTSTRAP_SERVERS a local broker is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

import testkit as harness
from core.kafka import KafkaSettings
from core.records import default_data_path
from core.routing import ROUTED_PRODUCER, alert_route
from core.settings import MODEL_DIR
from detector.settings import DetectorSettings
from detector.workers import cores
from scripts.bench_detector import drain_processes, prefill, raw_consume_isolated
from scripts.soak_incidents import alerts as make_alerts

log = logging.getLogger("bench_scale")


def prefill_alerts(bootstrap: str, topic: str, n: int, kinds: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True,
                         **ROUTED_PRODUCER})
    start_ms = int(time.time() * 1000) - 2 * 3_600_000  # in the past: the service clamps future event times
    for i, value in enumerate(make_alerts(n, kinds, 1, start_ms)):
        doc = json.loads(value)
        key = alert_route(doc["categories"].values(), doc["top_features"][0]["feature"])
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("pre-fill: alerts still undelivered after 120 s")


def raw_alerts(bootstrap: str, topic: str, n: int) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("raw"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = consumer.consume(5000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        got += sum(1 for m in msgs if m.error() is None and m.value() is not None)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return got / elapsed


def incident_rate(bootstrap: str, topic: str, n: int, k: int, work: Path) -> float:
    """Alerts/s of k instances in one group, from the committed offsets between 10% and 90% of ``n``."""
    name = harness.unique(f"scale{k}")
    procs = [harness.IncidentProcess(bootstrap, topic, "--transactional-id", f"tx-{name}-{i}",
                                     "--group-instance-id", f"{name}-{i}", "--idle-close-s", "3600",
                                     log_path=work / f"{name}-{i}.log", name=name) for i in range(k)]
    group = procs[0].group
    marks: dict[float, float] = {}
    try:
        for proc in procs:
            proc.start(wait_ready=False)
        while True:
            done = harness.committed_count(bootstrap, group, topic)
            now = time.perf_counter()
            for share in (0.1, 0.9):
                if share not in marks and done >= share * n:
                    marks[share] = now
            if done >= n:
                break
            if not all(p.alive() for p in procs):
                raise RuntimeError(f"an incident service exited; see {work}")
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.stop()
    return 0.8 * n / (marks[0.9] - marks[0.1])


def detector_rates(bootstrap: str, model: Path, data: Path, n: int, counts: list[int]) -> dict[str, Any]:
    topic = harness.unique("scale-in")
    harness.create_topics(bootstrap, (topic, 6))
    prefill(bootstrap, topic, data, n, labels=False)
    settings = DetectorSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), input_topic=topic,
                                alert_topic=harness.unique("scale-alerts"), model=model,
                                group_id=harness.unique("scale"), metrics_port=0)
    raw = raw_consume_isolated(settings, n)
    rates = {}
    for k in counts:
        group = settings.model_copy(update={"group_id": harness.unique(f"scale-det{k}")})
        rates[k] = drain_processes(group, n, k)[0]
        log.info("detector: %d process(es): %.0f records/s (bare consumer %.0f)", k, rates[k], raw)
    return {"raw_records_per_s": round(raw), "by_processes": {
        str(k): {"records_per_s": round(r), "scaling": round(r / rates[counts[0]], 3), "ratio": round(r / raw, 3)}
        for k, r in rates.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")))
    p.add_argument("--data", type=Path, default=default_data_path())
    p.add_argument("--alerts", type=int, default=200_000, help="alerts through the incident services")
    p.add_argument("--kinds", type=int, default=2_000, help="distinct alert kinds (spread over the partitions)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of the alert topic")
    p.add_argument("--records", type=int, default=300_000, help="records through the detectors (0: skip)")
    p.add_argument("--instances", default="1,2,4", help="instance counts to measure, comma-separated")
    p.add_argument("--work", type=Path, default=Path("artifacts/bench-scale"), help="the services' logs go here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.update(harness.QUIET_TF)
    counts = [int(k) for k in args.instances.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic = harness.unique("scale-alerts")
        harness.create_topics(bootstrap, (topic, args.partitions))
        log.info("pre-filling %s with %d alerts of %d kinds", topic, args.alerts, args.kinds)
        prefill_alerts(bootstrap, topic, args.alerts, args.kinds)
        raw = raw_alerts(bootstrap, topic, args.alerts)
        rates = {}
        for k in counts:
            rates[k] = incident_rate(bootstrap, topic, args.alerts, k, args.work)
            log.info("incident service: %d instance(s): %.0f alerts/s (bare consumer %.0f)", k, rates[k], raw)
        incidents = {"raw_alerts_per_s": round(raw), "by_instances": {
            str(k): {"alerts_per_s": round(r), "scaling": round(r / rates[counts[0]], 3), "ratio": round(r / raw, 3)}
            for k, r in rates.items()}}
        detectors: dict[str, Any] = {}
        if args.records:
            harness.ensure_bundle(args.model, args.data)
            detectors = detector_rates(bootstrap, args.model, args.data, args.records, counts)
    print(json.dumps({"benchmark": "scale", "cores": cores(), "alerts": args.alerts, "kinds": args.kinds,
                      "partitions": args.partitions, "incidents": incidents, "records": args.records,
                      "detectors": detectors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
