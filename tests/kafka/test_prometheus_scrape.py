"""A real Prometheus scrapes a detector, a producer and the incident service during a replay; every dashboard
query and every recording rule must parse and return data."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from core.records import read_records
from deploy.kafka.local_kafka import free_port
from testkit import REPO, DetectorProcess, IncidentProcess, produce_rows, wait_until
from tests.conftest import TopicFactory

PROM_DIR = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "kdd-detector.json"


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def recording_rules() -> list[str]:
    groups = yaml.safe_load((PROM_DIR / "rules" / "recording.yml").read_text())["groups"]
    return [r["record"] for g in groups for r in g["rules"]]


def query(port: int, expr: str) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310
        return json.loads(r.read())


def test_prometheus_scrapes_and_every_query_returns_data(kafka_bootstrap: str, make_topic: TopicFactory,
                                                         small_bundle: Path, kdd_path: Path,
                                                         tmp_path: Path) -> None:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is not installed; run scripts/setup.sh (Debian package prometheus)", pytrace=False)
    topic, alerts = make_topic("prom", partitions=2), make_topic("prom-alerts", 2)
    data = read_records(kdd_path, limit=20_000, keep_raw=True)
    line = data.payload(data.raw[0])
    bad = {i * 400: b"not,a,kdd,record" for i in range(40)}
    bad.update({i * 400 + 1: line.replace(",http,", ",brand_new_service,").encode() for i in range(40)})

    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, log_path=tmp_path / "detector.log")
    inc = IncidentProcess(kafka_bootstrap, alerts, log_path=tmp_path / "incidents.log")
    prod_port, prom_port = free_port(), free_port()
    rules = [str(PROM_DIR / "rules" / "recording.yml"), str(PROM_DIR / "rules" / "alerts.yml")]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [
            {"job_name": "kdd-detector", "static_configs": [{"targets": [f"127.0.0.1:{det.port}"]}]},
            {"job_name": "kdd-producer", "static_configs": [{"targets": [f"127.0.0.1:{prod_port}"]}]},
            {"job_name": "kdd-incidents", "static_configs": [{"targets": [f"127.0.0.1:{inc.port}"]}]},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen([exe, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))  # noqa: SIM115
    producer = None
    try:
        with det, inc:
            produce_rows(kafka_bootstrap, topic, data, bad)
            producer = subprocess.Popen(
                [sys.executable, "-m", "producer", "--bootstrap-servers", kafka_bootstrap, "--topic", topic, "--data",
                 str(kdd_path), "--rate", "500", "--loop", "--limit", "100000", "--metrics-port", str(prod_port)],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_until(lambda: _ok(prom_port, "up") and len(query(prom_port, "up == 1")["data"]["result"]) == 3,
                       60, "Prometheus up and scraping all three targets")
            pending = dashboard_queries() + recording_rules()
            missing: dict[str, str] = {}

            def all_return_data() -> bool:
                missing.clear()
                for expr in pending:
                    res = query(prom_port, expr)
                    if res["status"] != "success":
                        missing[expr] = f"error: {res}"
                    elif not res["data"]["result"]:
                        missing[expr] = "no data"
                return not missing

            try:
                wait_until(all_return_data, 120, "every dashboard query and recording rule to return data", 2.0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {missing}") from None
            scored = query(prom_port, "sum(detector_records_scored_total)")["data"]["result"]
            assert float(scored[0]["value"][1]) > 0
            for service in (det, inc):
                lint = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"],
                                      input=service.get("/metrics")[1], capture_output=True, text=True, timeout=60)
                # e.g. a 'quantile' label on a metric that is not a summary
                assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
    finally:
        if producer is not None:
            producer.send_signal(signal.SIGTERM)
            producer.wait(timeout=60)
        prom.terminate()
        prom.wait(timeout=30)


def _ok(port: int, expr: str) -> bool:
    try:
        return query(port, expr)["status"] == "success"
    except OSError:
        return False
