"""The demo: a local Kafka broker, a model (trained if absent), a replay, the detector and the incident service,
incidents on screen as they open and close.

Environment: the services' own (a running cluster instead of a local broker, the bundle directory, the
data file; see their ``--help``), and DEMO_RATE (records/s, default 2000), DEMO_LIMIT (records, default
30000), DEMO_ANOMALY_FRACTION (default 0.01), DEMO_METRICS_PORT (the detector's, default 9108).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer  # noqa: E402

from core.records import default_data_path  # noqa: E402
from core.settings import MODEL_DIR  # noqa: E402
from deploy.kafka import local_kafka  # noqa: E402
from scripts import harness  # noqa: E402


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def show_incidents(bootstrap: str, topic: str, producer: object, det: harness.DetectorProcess,
                   inc: harness.IncidentProcess, limit: int, quiet_s: float) -> None:
    """Print incidents as they open and close (not every alert) until the replay is scored and things went quiet."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("demo"),
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen: set[str] = set()
    done_at: float | None = None
    while done_at is None or time.monotonic() < done_at + quiet_s:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                continue
            doc = json.loads(msg.value())
            new = doc["incident_id"] not in seen
            seen.add(doc["incident_id"])
            if new or doc["status"] == "closed":
                labels = ", ".join(f"{k}{v}" for k, v in sorted(doc["labels"].items(), key=lambda kv: -kv[1])[:3])
                print(f"{'OPENED' if new and doc['status'] != 'closed' else 'CLOSED':6} {doc['incident_id']}  "
                      f"{'/'.join(doc['signature'][:3]):22} worst: {','.join(doc['signature'][3:5]):32} "
                      f"alerts {doc['alerts']:>6}  max severity {doc['max_severity']:8.1f}  labels: {labels}",
                      flush=True)
        m = det.metrics()
        scored = harness.total(m, "detector_records_scored_total") + harness.total(m, "detector_dead_letters_total")
        if done_at is None and producer.poll() is not None and scored >= limit:  # type: ignore[attr-defined]
            done_at = time.monotonic()
    consumer.close()
    say(f"incidents: {int(inc.total('incidents_opened_total'))} opened, {int(inc.total('incidents_closed_total'))} "
        f"closed, from {int(inc.total('incidents_alerts_total'))} alerts")


def main() -> int:
    model = Path(os.environ.get(MODEL_DIR, REPO / "artifacts" / "model"))
    data = default_data_path()
    rate = float(os.environ.get("DEMO_RATE", "2000"))
    limit = int(os.environ.get("DEMO_LIMIT", "30000"))
    fraction = os.environ.get("DEMO_ANOMALY_FRACTION", "0.01")
    port = int(os.environ.get("DEMO_METRICS_PORT", "9108"))
    if not (model / "bundle.json").exists():
        say(f"no model bundle at {model}: training one on {data} (default preset, about a minute)")
        harness.ensure_bundle(model, data)
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        say(f"starting Apache Kafka {local_kafka.KAFKA_VERSION} (KRaft) on 127.0.0.1")
    with harness.broker() as bootstrap:
        topic, alerts = harness.unique("kdd-connections"), harness.unique("kdd-alerts")
        harness.create_topics(bootstrap, (topic, 6))
        det = harness.DetectorProcess(bootstrap, topic, alerts, model, port=port)
        inc = harness.IncidentProcess(bootstrap, alerts, "--gap-s", "10", "--idle-close-s", "5")
        with det, inc:
            say(f"detector metrics: http://127.0.0.1:{det.port}/metrics   health: /healthz /readyz; incident service "
                f"metrics: http://127.0.0.1:{inc.port}/metrics")
            say(f"replaying {limit} records at {rate:g}/s, attacks at {fraction} of the stream; incidents follow "
                f"(alerts on {alerts}, incidents on {inc.topics['incident']})")
            producer = harness.start_replay(bootstrap, topic, data, limit, rate, "--shuffle", "--anomaly-fraction",
                                            fraction, stdout=-1)
            show_incidents(bootstrap, inc.topics["incident"], producer, det, inc, limit, quiet_s=20)
            say(f"replay summary: {producer.stdout.read().decode().strip() if producer.stdout else ''}")
            m = det.metrics()
            say(f"detector: scored {harness.total(m, 'detector_records_scored_total'):.0f}, alerts "
                f"{harness.total(m, 'detector_alerts_total'):.0f}, dead letters "
                f"{harness.total(m, 'detector_dead_letters_total'):.0f}")
            det.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
