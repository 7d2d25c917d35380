"""Soak of the incident service: a million alerts of random signatures; does its memory stay bounded?

``python -m scripts.soak_incidents [--alerts 1000000] [--signatures 200000]`` prints one JSON line and exits
0 when the RSS after the run is within ``--rss-tolerance`` of the RSS after the warm-up share of the alerts,
and every alert was filed, suppressed or dead-lettered; 1 otherwise (named on stderr).

The alerts are what a hostile or broken producer could send: each with a signature drawn from
``--signatures`` random services and features, so a book without limits would hold one open incident per
signature. The service runs as operators run it (its CLI, against ``KAFKA_BOOTSTRAP_SERVERS`` or a local
broker), with its defaults: at most 10,000 open incidents and 20,000 in memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import random
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

import testkit as harness
from core.kafka_io import produce

log = logging.getLogger("soak_incidents")


def alerts(n: int, signatures: int, seed: int, start_ms: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        s = rng.randrange(signatures)
        t = start_ms + i  # a thousand alerts per second of event time
        out.append(json.dumps({
            "schema": "kdd-alert/1", "record_id": str(i), "source": {"topic": "in", "partition": 0, "offset": i},
            "event_time": dt.datetime.fromtimestamp(t / 1000, dt.UTC).isoformat(timespec="milliseconds"),
            "severity": 1 + rng.random() * 20, "normal_rank": 0.99 + rng.random() * 0.01, "threshold_fpr": 0.01,
            "label": rng.choice(["normal.", "neptune.", "smurf.", f"x{s % 997}."]),
            "categories": {"protocol_type": "tcp", "service": f"svc{s}", "flag": "SF"},
            "top_features": [{"feature": f"f{s % 41}"}, {"feature": f"g{s % 37}"}, {"feature": "count"}],
        }, separators=(",", ":")).encode())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.soak_incidents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--alerts", type=int, default=1_000_000, help="alerts to send")
    p.add_argument("--signatures", type=int, default=200_000, help="distinct random signatures")
    p.add_argument("--warmup-share", type=float, default=0.2, help="share of the alerts before the RSS baseline")
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth over the baseline")
    p.add_argument("--work", type=Path, default=Path("artifacts/soak-incidents"), help="the service's log goes here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)
    start_ms = int(time.time() * 1000) - 2 * 3_600_000  # in the past: the service clamps future event times
    values = alerts(args.alerts, args.signatures, 1, start_ms)
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic = harness.unique("soak-alerts")
        harness.create_topics(bootstrap, (topic, 1))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
        with harness.IncidentProcess(bootstrap, topic, log_path=args.work / "incidents.log") as svc:
            t0 = time.monotonic()
            warm = int(args.alerts * args.warmup_share)
            for i, v in enumerate(values[:warm]):
                produce(producer, topic, v, str(i).encode())
            producer.flush(120)

            def handled() -> float:
                m = svc.metrics()
                return sum(harness.total(m, k) for k in ("incidents_alerts_total", "incidents_suppressed_alerts_total",
                                                         "incidents_unreadable_alerts_total"))

            harness.wait_until(lambda: handled() >= warm, 1800, "the warm-up alerts filed", 1.0)
            baseline = svc.rss_bytes()
            peak = baseline
            for i, v in enumerate(values[warm:], start=warm):
                produce(producer, topic, v, str(i).encode())
                if i % 50_000 == 0:
                    producer.poll(0)
                    peak = max(peak, svc.rss_bytes())
            producer.flush(120)
            while handled() < args.alerts:
                peak = max(peak, svc.rss_bytes())
                time.sleep(1.0)
                if time.monotonic() - t0 > 3600:
                    break
            end = svc.rss_bytes()
            m = svc.metrics()
            result = {
                "alerts": args.alerts, "signatures": args.signatures, "handled": int(handled()),
                "seconds": round(time.monotonic() - t0, 1),
                "rss_mib_after_warmup": round(baseline / 2**20, 1), "rss_mib_end": round(end / 2**20, 1),
                "rss_mib_peak": round(peak / 2**20, 1), "rss_growth": round(end / baseline - 1, 4),
                "open_incidents": int(harness.total(m, "incidents_open")),
                "crowded_out": int(harness.total(m, "incidents_crowded_out_total")),
                "pruned": int(harness.total(m, "incidents_pruned_total")),
            }
    print(json.dumps(result))
    failures = []
    if result["handled"] < args.alerts:
        failures.append(f"only {result['handled']} of {args.alerts} alerts handled")
    if result["rss_growth"] > args.rss_tolerance:
        failures.append(f"RSS grew {result['rss_growth']:.1%} after the warm-up (tolerance {args.rss_tolerance:.0%})")
    for f in failures:
        log.error("%s", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
