"""The local launcher's shell interface, as an operator uses it: start, status, stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient

from deploy.kafka import local_kafka

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "kafka" / "local_kafka.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180)


def test_cli_start_status_stop(tmp_path: Path) -> None:
    state = tmp_path / "k"
    started = run("start", "--dir", str(state))
    assert started.returncode == 0, started.stderr
    last = started.stdout.strip().splitlines()[-1]
    assert last.startswith("KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:")
    bootstrap = last.split("=", 1)[1]
    try:
        md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
        assert len(md.brokers) == 1
        status = run("status", "--dir", str(state))
        assert status.returncode == 0 and "running" in status.stdout
        assert local_kafka.LocalKafka.load(state).reported_version() == local_kafka.KAFKA_VERSION
    finally:
        stopped = run("stop", "--dir", str(state))
    assert stopped.returncode == 0, stopped.stderr
    assert not state.exists()
    gone = run("status", "--dir", str(state))
    assert gone.returncode == 2 and "no local Kafka cluster recorded" in gone.stderr


def test_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    """A bad setting makes the broker exit; the launcher must say so with the log, not hang."""
    try:
        local_kafka.start_cluster(
            nodes=1, directory=tmp_path / "bad", extra_config={"num.network.threads": "0"}, ready_timeout_s=60
        )
    except local_kafka.LocalKafkaError as exc:
        message = str(exc)
    else:  # pragma: no cover - the assertion below reports it
        message = ""
    assert "num.network.threads" in message


def test_nodes_other_than_1_or_3_are_refused(tmp_path: Path) -> None:
    result = run("start", "--nodes", "2", "--dir", str(tmp_path / "x"))
    assert result.returncode == 2 and "--nodes must be 1 or 3" in result.stderr


def test_cli_secured_broker_prints_its_client_settings(tmp_path: Path) -> None:
    state = tmp_path / "s"
    started = run("start", "--dir", str(state), "--scram-user", "alice:alice-pw", "--tls")
    assert started.returncode == 0, started.stderr
    try:
        env = dict(line.split("=", 1) for line in started.stdout.strip().splitlines())
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        conf = {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "security.protocol": "SASL_SSL",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": "alice-pw",
                "ssl.ca.location": env["KAFKA_SSL_CA_LOCATION"]}
        assert len(AdminClient(conf).list_topics(timeout=15).brokers) == 1
        assert "alice-pw" not in started.stdout + started.stderr
    finally:
        assert run("stop", "--dir", str(state)).returncode == 0
