"""UNSW-NB15 end to end on a real broker with no code written for it: a small model trained on a slice of the
real file (schema file only), the producer replaying its rows (header, BOM, CRLF and all), the detector
parsing and scoring them off the wire exactly as offline scoring does, and the incident service grouping the
alerts with `attack_cat` as the family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from core.records import read_records
from core.schema import RecordSchema
from testkit import (
    REPO,
    DetectorProcess,
    IncidentProcess,
    assert_alerted,
    latest_incidents,
    offline_alert_ids,
    wait_until,
)
from tests.conftest import create_topic

UNSW = REPO / ".." / "shared" / "data" / "unsw_nb15_dev.csv.gz"
ROWS = 4000


@pytest.fixture(scope="module")
def unsw_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.autoencoder import ModelConfig
    from training.train import TrainOptions, train

    if not UNSW.exists():
        pytest.fail(f"the shared UNSW-NB15 file is missing at {UNSW.resolve()}", pytrace=False)
    out = tmp_path_factory.mktemp("unsw") / "model"
    train(TrainOptions(data=UNSW, out=out, model=ModelConfig.from_preset("default", epochs=4, seed=3),
                       limit=12_000, schema=RecordSchema.load("unsw_nb15")))
    return out


def test_unsw_nb15_through_producer_detector_and_incidents(kafka_bootstrap: str, unsw_bundle: Path,
                                                            tmp_path: Path) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic, alerts = create_topic(admin, "unsw", 2, 1), create_topic(admin, "unsw-alerts", 2, 1)
    replay = subprocess.run([sys.executable, "-m", "producer", "--bootstrap-servers", kafka_bootstrap, "--topic",
                             topic, "--data", str(UNSW), "--schema", "unsw_nb15", "--limit", str(ROWS),
                             "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert json.loads(replay.stdout.strip().splitlines()[-1])["delivered"] == ROWS

    data = read_records(UNSW, schema=RecordSchema.load("unsw_nb15"), limit=ROWS)
    expected, _ = offline_alert_ids(unsw_bundle, data)
    assert len(expected) > 100  # attacks are half the file: a model that alerted on nothing would prove nothing
    det = DetectorProcess(kafka_bootstrap, topic, alerts, unsw_bundle, log_path=tmp_path / "detector.log")
    with det:
        wait_until(lambda: det.total("detector_records_scored_total") >= ROWS, 120, "the UNSW rows scored")
        assert det.total("detector_dead_letters_total") == 0  # every replayed row parses off the wire
        families = {k: v for k, v in det.metrics().items() if k.startswith("detector_decisions_total")}
        assert any('family=exploits' in k or 'family=generic' in k for k in families), families
        assert det.stop() == 0
    assert_alerted(kafka_bootstrap, alerts, expected)  # the same ids as offline scoring, none more, none fewer

    inc = IncidentProcess(kafka_bootstrap, alerts, "--idle-close-s", "1", log_path=tmp_path / "incidents.log")
    with inc:
        wait_until(lambda: inc.total("incidents_alerts_total") >= len(expected), 60, "every alert filed")
        assert inc.stop() == 0
    incidents = latest_incidents(kafka_bootstrap, inc.topics["incident"])
    labels = {label.lower() for i in incidents.values() for label in i.get("labels", {})}  # as the file writes them
    assert labels & {"generic", "exploits", "dos", "fuzzers", "reconnaissance"}, labels
