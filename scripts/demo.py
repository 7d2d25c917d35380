"""The demo: a local Kafka broker, a model (trained if absent), a replay, the detector and the incident service,
incidents on screen as they open and close.

Environment: the services' own (a running cluster instead of a local broker, the bundle directory, the
data file; see their ``--help``), and DEMO_RATE (records/s, default 2000), DEMO_LIMIT (records, default
30000), DEMO_EVENT_RATE (connections per second of event time the replay stands for, default 100: 30,000
records are five minutes of traffic, sent in fifteen seconds), DEMO_ANOMALY_FRACTION (default 0.01),
DEMO_METRICS_PORT (the detector's, default 9108), DEMO_CONSOLE
(``--console``: also serve the triage console on 127.0.0.1:DEMO_CONSOLE_PORT, default 8090, and keep everything
running after the summary until Ctrl-C, so the incidents can be triaged in a browser).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer  # noqa: E402

import testkit as harness  # noqa: E402
from core.records import default_data_path  # noqa: E402
from core.settings import MODEL_DIR  # noqa: E402
from deploy.kafka import local_kafka  # noqa: E402


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def _line(doc: dict) -> str:
    labels = ", ".join(f"{k}{v}" for k, v in sorted(doc["labels"].items(), key=lambda kv: -kv[1])[:3])
    return (f"priority {doc['priority']:9.1f}  {'/'.join(doc['signature'][:3]):22} worst: "
            f"{','.join(doc['signature'][3:5]):28} alerts {doc['alerts']:>6}  {doc['rate_per_min']:8.1f}/min  "
            f"max severity {doc['max_severity']:7.1f}  labels: {labels}")


def show_incidents(bootstrap: str, topic: str, producer: object, det: harness.DetectorProcess,
                   inc: harness.IncidentProcess, limit: int, quiet_s: float) -> dict[str, dict]:
    """Print incidents as they page (not every alert, not the review queue) until the replay is scored and
    things went quiet; returns the latest record of every incident."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("demo"),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    latest: dict[str, dict] = {}
    done_at: float | None = None
    while done_at is None or time.monotonic() < done_at + quiet_s:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None or msg.value() is None:
                continue
            doc = json.loads(msg.value())
            before = latest.get(doc["incident_id"])
            latest[doc["incident_id"]] = doc
            if doc["triage"]["decision"] == "page" and (before is None or before["triage"]["decision"] != "page"):
                print(f"PAGE   {doc['incident_id']}  {_line(doc)}", flush=True)
        m = det.metrics()
        scored = harness.total(m, "detector_records_scored_total") + harness.total(m, "detector_dead_letters_total")
        if done_at is None and producer.poll() is not None and scored >= limit:  # type: ignore[attr-defined]
            done_at = time.monotonic()
    consumer.close()
    return latest


def summarise(latest: dict[str, dict], inc: harness.IncidentProcess) -> None:
    """The paged incidents, best first, and what the review queue holds."""
    paged = sorted((d for d in latest.values() if d["triage"]["decision"] == "page"), key=lambda d: -d["priority"])
    review = [d for d in latest.values() if d["triage"]["decision"] != "page"]

    def attack(d: dict) -> bool:
        normal = sum(v for k, v in d["labels"].items() if k.rstrip(".") == "normal")
        return normal * 2 < sum(d["labels"].values())

    say(f"paged incidents, best first (budget {int(inc.total('incidents_page_budget'))} per hour, page line now "
        f"{inc.total('incidents_page_line'):.1f}):")
    for d in paged:
        print(f"  {_line(d)}", flush=True)
    say(f"incidents: {len(latest)} from {int(inc.total('incidents_alerts_total'))} alerts; {len(paged)} paged "
        f"({sum(map(attack, paged))} of them mostly attacks), {len(review)} in review "
        f"({sum(map(attack, review))} mostly attacks); the review queue's best: "
        f"{max((d['priority'] for d in review), default=0):.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bash scripts/demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=float(os.environ.get("DEMO_RATE", "2000")),
                   help="records per second [env DEMO_RATE; default 2000]")
    p.add_argument("--limit", type=int, default=int(os.environ.get("DEMO_LIMIT", "30000")),
                   help="records to replay [env DEMO_LIMIT; default 30000]")
    p.add_argument("--event-rate", type=float, default=float(os.environ.get("DEMO_EVENT_RATE", "100")),
                   help="connections per second of event time the replay stands for (the producer's --event-rate) "
                        "[env DEMO_EVENT_RATE; default 100]")
    p.add_argument("--anomaly-fraction", default=os.environ.get("DEMO_ANOMALY_FRACTION", "0.01"),
                   help="share of attacks in the replay [env DEMO_ANOMALY_FRACTION; default 0.01]")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("DEMO_METRICS_PORT", "9108")),
                   help="the detector's metrics port [env DEMO_METRICS_PORT; default 9108]")
    p.add_argument("--console", action=argparse.BooleanOptionalAction,
                   default=os.environ.get("DEMO_CONSOLE", "").lower() in ("1", "true", "yes"),
                   help="also serve the triage console and stay up until Ctrl-C [env DEMO_CONSOLE; default off]")
    p.add_argument("--console-port", type=int, default=int(os.environ.get("DEMO_CONSOLE_PORT", "8090")),
                   help="the console's port [env DEMO_CONSOLE_PORT; default 8090]")
    args = p.parse_args(argv)
    model = Path(os.environ.get(MODEL_DIR, REPO / "artifacts" / "model"))
    data = default_data_path()
    rate, limit, fraction, port = args.rate, args.limit, args.anomaly_fraction, args.metrics_port
    if not (model / "bundle.json").exists():
        say(f"no model bundle at {model}: training one on {data} (default preset, about a minute)")
        harness.ensure_bundle(model, data)
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        say(f"starting Apache Kafka {local_kafka.KAFKA_VERSION} (KRaft) on 127.0.0.1")
    with harness.broker() as bootstrap:
        topic, alerts = harness.unique("kdd-connections"), harness.unique("kdd-alerts")
        harness.create_topics(bootstrap, (topic, 6))
        det = harness.DetectorProcess(bootstrap, topic, alerts, model, port=port)
        inc = harness.IncidentProcess(bootstrap, alerts, "--gap-s", "60", "--idle-close-s", "5")
        with det, inc:
            say(f"detector metrics: http://127.0.0.1:{det.port}/metrics   health: /healthz /readyz; incident service "
                f"metrics: http://127.0.0.1:{inc.port}/metrics")
            say(f"replaying {limit} records at {rate:g}/s, stamped as {limit / args.event_rate / 60:.1f} minutes of "
                f"traffic ({args.event_rate:g} connections/s), attacks at {fraction} of the stream; incidents follow "
                f"(alerts on {alerts}, incidents on {inc.topics['incident']})")
            producer = harness.start_replay(bootstrap, topic, data, limit, rate, "--shuffle", "--anomaly-fraction",
                                            fraction, "--event-rate", str(args.event_rate), stdout=-1)
            latest = show_incidents(bootstrap, inc.topics["incident"], producer, det, inc, limit, quiet_s=20)
            summarise(latest, inc)
            say(f"replay summary: {producer.stdout.read().decode().strip() if producer.stdout else ''}")
            m = det.metrics()
            say(f"detector: scored {harness.total(m, 'detector_records_scored_total'):.0f}, alerts "
                f"{harness.total(m, 'detector_alerts_total'):.0f}, dead letters "
                f"{harness.total(m, 'detector_dead_letters_total'):.0f}")
            det.stop()
            if args.console:
                serve_console(bootstrap, inc, args.console_port)
    return 0


def serve_console(bootstrap: str, inc: harness.IncidentProcess, port: int) -> None:
    """The triage console over the demo's incidents, until Ctrl-C (the incident service keeps running)."""
    with harness.ConsoleProcess(bootstrap, inc, port=port) as console:
        say(f"triage console: {console.url}/  (incidents best priority first; mark one benign, then see "
            f"{console.url}/verdicts). Ctrl-C stops the demo")
        try:
            while console.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            say("stopping")


if __name__ == "__main__":
    sys.exit(main())
