"""A broker whose only client listener is SASL/SCRAM over TLS: right credentials work end to end, wrong
ones fail fast with a message that says what to fix, and no secret reaches a log line or /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from core.records import read_records
from deploy.kafka import local_kafka
from testkit import REPO, DetectorProcess, assert_alerted, offline_alert_ids, wait_until
from tests.conftest import create_topic, own_cluster

USER = "kdd-app"
# Distinctive, so a leak anywhere in captured output is unambiguous.
PASSWORD = f"pw-{uuid.uuid4().hex}"
WRONG = f"wrong-{uuid.uuid4().hex}"
ROWS = 3000


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    security = local_kafka.Security(users={"broker": f"b-{uuid.uuid4().hex}", USER: PASSWORD}, tls=True)
    yield from own_cluster(tmp_path_factory, "sasl", security=security)  # with SCRAM users of its own


def client_args(cluster: local_kafka.LocalKafka, *, user: str = USER, ca: bool = True) -> list[str]:
    args = ["--bootstrap-servers", cluster.bootstrap_servers, "--security-protocol", cluster.security_protocol,
            "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user]
    if ca:
        assert cluster.ssl_ca_location
        args += ["--ssl-ca-location", cluster.ssl_ca_location]
    return args


def run(module: str, *args: str, password: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    # The password goes through the environment, as the README tells operators to do (flags show in ps).
    env = {**os.environ, "KAFKA_SASL_PASSWORD": password, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_right_credentials_work_end_to_end_and_leak_nothing(secure: local_kafka.LocalKafka, small_bundle: Path,
                                                            kdd_path: Path, tmp_path: Path) -> None:
    client = secure.client_config(USER, PASSWORD)
    admin = AdminClient(client)
    topic, alerts = create_topic(admin, "sec", 2, 1), create_topic(admin, "sec-alerts", 2, 1)

    replay = run("producer", *client_args(secure), "--topic", topic, "--data", str(kdd_path), "--limit", str(ROWS),
                 password=PASSWORD)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert f'"delivered": {ROWS}' in replay.stdout

    data = read_records(kdd_path, limit=ROWS, keep_raw=True)
    expected, _ = offline_alert_ids(small_bundle, data)
    log = tmp_path / "detector.log"
    det = DetectorProcess(secure.bootstrap_servers, topic, alerts, small_bundle, *client_args(secure)[2:],
                          log_path=log, env={"KAFKA_SASL_PASSWORD": PASSWORD, "DETECTOR_LOG_LEVEL": "DEBUG"})
    with det:
        wait_until(lambda: det.total("detector_records_scored_total") >= ROWS, 120, "scoring over SASL_SSL")
        metrics_text = det.get("/metrics")[1]
        assert det.stop() == 0
    extra = {k: v for k, v in client.items() if k != "bootstrap.servers"}
    assert_alerted(secure.bootstrap_servers, alerts, expected, extra=extra)

    detector_log = log.read_text()
    assert "sasl.password" in detector_log  # the effective config is logged (redacted) ...
    for text, where in ((replay.stderr + replay.stdout, "producer output"), (detector_log, "detector log"),
                        (metrics_text, "/metrics")):
        assert PASSWORD not in text, f"the SASL password leaked into the {where}"  # ... the secret never is


@pytest.mark.parametrize("module", ["producer", "detector"])
def test_wrong_password_fails_fast_and_names_the_user(secure: local_kafka.LocalKafka, small_bundle: Path,
                                                      kdd_path: Path, module: str) -> None:
    extra = (["--data", str(kdd_path), "--limit", "10", "--topic", "never"] if module == "producer"
             else ["--model", str(small_bundle), "--metrics-port", "0", "--input-topic", "never"])
    t0 = time.monotonic()
    proc = run(module, *client_args(secure), *extra, "--connect-timeout-s", "60", password=WRONG)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"rejected the credentials of SASL user '{USER}'" in proc.stderr
    assert "KAFKA_SASL_PASSWORD" in proc.stderr  # says what to fix
    assert WRONG not in proc.stderr + proc.stdout
    # "fast": well before the 60 s connect timeout, which is what an unreachable cluster would take
    assert elapsed < 45, f"{module} took {elapsed:.0f}s to report rejected credentials"


def test_missing_ca_is_a_tls_error_not_a_hang(secure: local_kafka.LocalKafka, kdd_path: Path) -> None:
    proc = run("producer", *client_args(secure, ca=False), "--data", str(kdd_path), "--limit", "10", "--topic", "x",
               "--connect-timeout-s", "60", password=PASSWORD)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "TLS handshake with Kafka" in proc.stderr and "--ssl-ca-location" in proc.stderr


def test_plaintext_client_on_a_secured_listener_times_out_clearly(secure: local_kafka.LocalKafka,
                                                                  kdd_path: Path) -> None:
    proc = run("producer", "--bootstrap-servers", secure.bootstrap_servers, "--data", str(kdd_path), "--limit", "10",
               "--topic", "x", "--connect-timeout-s", "4", password="")
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "no Kafka broker answered" in proc.stderr and "--security-protocol" in proc.stderr
