"""The demo: a local Kafka broker, a model (trained if absent), a replay, the detector, alerts on screen.

Environment: KAFKA_BOOTSTRAP_SERVERS (use a running cluster instead of a local broker), MODEL_DIR
(default artifacts/model), KDD_DATA, DEMO_RATE (records/s, default 2000), DEMO_LIMIT (records, default
30000), DEMO_ANOMALY_FRACTION (default 0.01), DETECTOR_METRICS_PORT (default 9108).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import Consumer  # noqa: E402

from deploy.kafka import local_kafka  # noqa: E402
from training.kdd99 import default_data_path  # noqa: E402


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def metric_total(port: int, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#") and (line[len(name)] in " {"))


def main() -> int:
    model = Path(os.environ.get("MODEL_DIR", REPO / "artifacts" / "model"))
    data = default_data_path()
    rate = os.environ.get("DEMO_RATE", "2000")
    limit = int(os.environ.get("DEMO_LIMIT", "30000"))
    fraction = os.environ.get("DEMO_ANOMALY_FRACTION", "0.01")
    port = int(os.environ.get("DETECTOR_METRICS_PORT", "9108"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    py = sys.executable

    if not (model / "bundle.json").exists():
        say(f"no model bundle at {model}: training one on {data} (default preset, about a minute)")
        subprocess.run([py, "-m", "training", "train", "--data", str(data), "--out", str(model)], cwd=REPO, env=env,
                       check=True)
    cluster = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        say(f"starting Apache Kafka {local_kafka.KAFKA_VERSION} (KRaft) on 127.0.0.1")
        cluster = local_kafka.start_cluster(nodes=1)
        bootstrap = cluster.bootstrap_servers
    run = uuid.uuid4().hex[:6]
    topic, alerts = f"kdd-connections-{run}", f"kdd-alerts-{run}"
    detector = None
    try:
        subprocess.run([py, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic, "--limit", "0"],
                       cwd=REPO, env=env, check=True, capture_output=True)  # creates the topic
        detector = subprocess.Popen([py, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic", topic,
                                     "--alert-topic", alerts, "--model", str(model), "--metrics-port", str(port)],
                                    cwd=REPO, env=env, stderr=subprocess.DEVNULL)
        say(f"detector metrics: http://127.0.0.1:{port}/metrics   health: /healthz /readyz")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):  # noqa: S310
                    break
            except OSError:
                if detector.poll() is not None:
                    say("the detector exited during start-up; run `python -m detector --help` to check settings")
                    return 1
                time.sleep(0.3)
        say(f"replaying {limit} records at {rate}/s, attacks at {fraction} of the stream: alerts follow")
        producer = subprocess.Popen([py, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic,
                                     "--data", str(data), "--rate", rate, "--limit", str(limit), "--shuffle",
                                     "--anomaly-fraction", fraction, "--no-progress"],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{run}",
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
            done = producer.poll() is not None
            if done and metric_total(port, "detector_records_scored_total") + metric_total(
                    port, "detector_dead_letters_total") >= limit:
                break
            if done and producer.returncode != 0:
                say("the producer failed")
                break
        consumer.close()
        say(f"replay summary: {producer.stdout.read().strip() if producer.stdout else ''}")
        say(f"detector: scored {metric_total(port, 'detector_records_scored_total'):.0f}, alerts "
            f"{metric_total(port, 'detector_alerts_total'):.0f}, dead letters "
            f"{metric_total(port, 'detector_dead_letters_total'):.0f}")
    finally:
        if detector is not None and detector.poll() is None:
            detector.send_signal(signal.SIGTERM)
            detector.wait(timeout=60)
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
