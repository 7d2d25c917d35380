"""The demo: a local Kafka broker, a model (trained if absent), a replay, the detector, alerts on screen.

Environment: the services' own (a running cluster instead of a local broker, the bundle directory, the
data file; see their ``--help``), and DEMO_RATE (records/s, default 2000), DEMO_LIMIT (records, default
30000), DEMO_ANOMALY_FRACTION (default 0.01), DEMO_METRICS_PORT (the detector's, default 9108).
"""

from __future__ import annotations

import json
import os
import sys
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


def show_alerts(bootstrap: str, alerts: str, producer: object, det: harness.DetectorProcess, limit: int) -> None:
    """Print alerts as they arrive until every replayed record is scored or dead-lettered."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": harness.unique("demo"),
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([alerts])
    shown = 0
    while True:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is not None:
                continue
            a = json.loads(msg.value())
            top = a["top_features"][0]
            shown += 1
            if shown <= 40 or shown % 50 == 0:
                print(f"ALERT #{shown:<5} record {a['record_id']:>7}  severity {a['severity']:>8.1f}  "
                      f"label {str(a['label']):<16} top: {top['feature']}={top['observed']} "
                      f"(expected {top['reconstructed']})", flush=True)
        done = producer.poll() is not None  # type: ignore[attr-defined]
        m = det.metrics()
        if done and harness.total(m, "detector_records_scored_total") + harness.total(
                m, "detector_dead_letters_total") >= limit:
            break
        if done and producer.returncode != 0:  # type: ignore[attr-defined]
            say("the producer failed")
            break
    consumer.close()


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
        with det:
            say(f"detector metrics: http://127.0.0.1:{port}/metrics   health: /healthz /readyz")
            say(f"replaying {limit} records at {rate:g}/s, attacks at {fraction} of the stream: alerts follow")
            producer = harness.start_replay(bootstrap, topic, data, limit, rate, "--shuffle", "--anomaly-fraction",
                                            fraction, stdout=-1)
            show_alerts(bootstrap, alerts, producer, det, limit)
            say(f"replay summary: {producer.stdout.read().decode().strip() if producer.stdout else ''}")
            m = det.metrics()
            say(f"detector: scored {harness.total(m, 'detector_records_scored_total'):.0f}, alerts "
                f"{harness.total(m, 'detector_alerts_total'):.0f}, dead letters "
                f"{harness.total(m, 'detector_dead_letters_total'):.0f}")
            det.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
