"""The images, built and run for real (podman or docker; scripts/setup.sh installs podman where neither is).

The module builds the app (serving: Keras on JAX, no TensorFlow), training, Kafka and Prometheus images with
``scripts/build_images.py`` (a local base from Debian packages where no registry answers), then: the training
image, as a one-shot job, writes a bundle into a named volume; the app image loads it from that volume, reads
a broker started by the project's launcher, and its alerts equal TensorFlow's offline scoring by record id
for a replay sent by the producer (app image), up to rows within float32 rounding of the threshold (counted
and bounded); both run as a non-root user and the health check passes; the app image holds no TensorFlow
and is under 1 GB; and the Compose file brings up Kafka, topics, training,
producer, detector and Prometheus, with alerts on the alert topic and Prometheus scraping the detector.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from core.records import read_records
from deploy.kafka.local_kafka import free_port
from model.bundle import load_bundle
from scripts import build_images
from scripts.containers import REPO, Engine, find_engine
from testkit import alert_docs, drain, offline_alert_ids, unique, wait_until
from tests.conftest import create_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

APP = build_images.IMAGES["app"].name
TRAINING = build_images.IMAGES["training"].name
NEAR_THRESHOLD = 1e-5  # relative: JAX and TensorFlow round float32 sums differently, so rows this close may flip
TRAIN_ROWS = 60_000
REPLAY_ROWS = 20_000


def wait_for(engine: Engine, container: str, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """wait_until, with the container's log in the failure (the log at the time it failed)."""
    try:
        wait_until(predicate, timeout_s, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {container}'s log:\n{engine.logs(container)}") from None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def engine() -> Engine:
    return find_engine()


@pytest.fixture(scope="module")
def images(engine: Engine) -> dict[str, dict[str, object]]:
    built = build_images.build_all(list(build_images.DEFAULT_IMAGES), engine.name, wheelhouse=True, no_cache=False)
    return {str(b["name"]): b for b in built}


@pytest.fixture(scope="module")
def model_volume(engine: Engine, images: dict[str, dict[str, object]], kdd_path: Path) -> Iterator[str]:
    """The training image as the one-shot job it is in Compose and Kubernetes: a bundle into a volume."""
    volume = unique("kdd-models")
    engine.run("volume", "create", volume)
    try:
        engine.run("run", "--rm", "--network", "none", "-v", f"{volume}:/models", "-v", f"{kdd_path.parent}:/data:ro",
                   TRAINING, "train", "--data", f"/data/{kdd_path.name}",
                   "--out", "/models/current", "--epochs", "2", "--limit", str(TRAIN_ROWS), timeout=900)
        yield volume
    finally:
        engine.run("volume", "rm", "--force", volume, check=False)


def test_training_job_writes_a_loadable_bundle_into_the_volume(engine: Engine, model_volume: str) -> None:
    bundle_dir = engine.volume_path(model_volume) / "current"
    bundle = load_bundle(bundle_dir)
    assert bundle.threshold > 0
    assert (bundle_dir / "schema.json").exists()
    assert bundle_dir.stat().st_uid == 10001, "the job ran as the image's non-root user"


@pytest.fixture(scope="module")
def detector(engine: Engine, model_volume: str, kafka_bootstrap: str,
             kafka_admin: AdminClient) -> Iterator[dict[str, str]]:
    names = {role: create_topic(kafka_admin, f"ctr-{role}", 3, 1) for role in ("input", "alerts", "dlq")}
    names.update(port=str(free_port()), container=unique("kdd-detector"))
    # The port through the environment, as an operator sets it: the image's health check reads the same variable.
    engine.run("run", "--detach", "--name", names["container"], "--network", "host", "-v",
               f"{model_volume}:/models:ro", "-e", f"DETECTOR_METRICS_PORT={names['port']}", APP,
               "--bootstrap-servers", kafka_bootstrap, "--input-topic", names["input"], "--alert-topic",
               names["alerts"], "--dlq-topic", names["dlq"], "--group-id", f"g-{names['input']}")
    try:
        wait_for(engine, names["container"], lambda: http_ok(f"http://127.0.0.1:{names['port']}/readyz"), 180,
                 "the detector container ready")
        yield names
    finally:
        engine.remove(names["container"])


def test_detector_container_alerts_equal_offline_scoring(engine: Engine, detector: dict[str, str],
                                                         model_volume: str, kafka_bootstrap: str,
                                                         kdd_path: Path) -> None:
    replay = engine.run("run", "--rm", "--network", "host", "-v", f"{kdd_path.parent}:/data:ro", "--entrypoint",
                        "python", APP, "-m", "producer", "--bootstrap-servers", kafka_bootstrap, "--topic",
                        detector["input"], "--data", f"/data/{kdd_path.name}", "--limit", str(REPLAY_ROWS),
                        "--no-progress", timeout=300)
    summary = json.loads(replay.stdout.decode().strip().splitlines()[-1])
    assert summary["delivered"] == REPLAY_ROWS
    bundle_dir = engine.volume_path(model_volume) / "current"
    data = read_records(kdd_path, limit=REPLAY_ROWS, keep_raw=True)
    expected, scores = offline_alert_ids(bundle_dir, data)  # TensorFlow, in this process
    assert expected, "the replay holds attacks, so some alerts are due"
    threshold = load_bundle(bundle_dir).threshold
    near = {int(i) for i in data.record_ids[np.abs(scores / threshold - 1) <= NEAR_THRESHOLD]}
    docs = alert_docs(drain(kafka_bootstrap, detector["alerts"], len(expected), timeout_s=180))
    alerted = {int(d["record_id"]) for d in docs}
    assert len(docs) == len(alerted), "no duplicates"
    differ = alerted ^ expected
    assert differ <= near, f"{len(differ - near)} rows differ from TensorFlow away from the threshold"
    assert len(differ) <= 5, f"{len(differ)} rows within float32 rounding of the threshold differ"
    assert {d["model_version"] for d in docs} == {load_bundle(bundle_dir).version}


def test_app_image_scores_on_jax_without_tensorflow_and_is_under_1_gb(engine: Engine,
                                                                       images: dict[str, dict[str, object]]) -> None:
    probe = ("import importlib.util, keras; print(keras.backend.backend(), "
             "importlib.util.find_spec('tensorflow') is None, importlib.util.find_spec('sklearn') is None)")
    out = engine.run("run", "--rm", "--network", "none", "--entrypoint", "python", APP, "-c", probe).stdout.decode()
    assert out.split() == ["jax", "True", "True"], out
    assert int(images[APP]["size_bytes"]) < 1_000_000_000, images[APP]


def test_containers_run_as_non_root_with_a_passing_health_check(engine: Engine, detector: dict[str, str]) -> None:
    assert engine.text("exec", detector["container"], "id", "-u") == "10001"
    image = engine.inspect(APP)
    config = image["Config"]
    assert isinstance(config, dict) and config["User"] == "10001"
    # podman reports it beside Config, docker inside it
    assert image.get("Healthcheck") or config.get("Healthcheck"), "the image keeps its HEALTHCHECK (docker format)"
    wait_until(lambda: engine.health_check(detector["container"]), 120, "the container's health check to pass")


# ------------------------------------------------------------------------------------------ compose
def compose_env(engine: Engine, kdd_path: Path, ports: dict[str, int]) -> dict[str, str]:
    return {**engine.env, "APP_IMAGE": APP, "TRAINING_IMAGE": TRAINING,
            "KAFKA_IMAGE": build_images.IMAGES["kafka"].name,
            "PROMETHEUS_IMAGE": build_images.IMAGES["prometheus"].name, "KDD_DATA_DIR": str(kdd_path.parent),
            "TRAIN_ARGS": "--epochs 1 --limit 30000", "DETECTOR_PORT": str(ports["detector"]),
            "PROMETHEUS_PORT": str(ports["prometheus"]), "GRAFANA_PORT": str(free_port())}


def alerts_in_stack(engine: Engine, container: str) -> int:
    """Alerts on the stack's alert topic, read from inside the network by a consumer in the app image."""
    code = ("from confluent_kafka import Consumer, TopicPartition\n"
            "c = Consumer({'bootstrap.servers': 'kafka:9092', 'group.id': 'probe'})\n"
            "md = c.list_topics('kdd-alerts', timeout=10).topics['kdd-alerts'].partitions\n"
            "print(sum(c.get_watermark_offsets(TopicPartition('kdd-alerts', p), timeout=10)[1] for p in md))\n")
    proc = engine.run("exec", container, "python", "-c", code, check=False, timeout=60)
    return int(proc.stdout.decode().strip() or 0) if proc.returncode == 0 else 0


def prometheus_target_up(port: int, job: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=3) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
    except OSError:
        return False
    return any(t["labels"]["job"] == job and t["health"] == "up" for t in targets)


def compose(engine: Engine, project: str, env: dict[str, str], *args: str,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
    cmd = [*engine.compose(), "-p", project, "-f", str(REPO / "deploy" / "docker-compose.yml"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False, cwd=REPO)
    assert not check or proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")[-4000:]
    return proc


def test_compose_stack_runs_alerts_and_is_scraped(engine: Engine, images: dict[str, dict[str, object]],
                                                  kdd_path: Path) -> None:
    project = unique("kdd").replace("-", "")
    ports = {"detector": free_port(), "prometheus": free_port()}
    env = compose_env(engine, kdd_path, ports)
    services = ["kafka", "topics", "train", "producer", "detector", "incidents", "prometheus"]  # no grafana image
    detector = f"{project}_detector_1"
    try:
        # All at once (--no-deps): podman 4.3 cannot start chains of dependent containers, and the services
        # must cope with any start order anyway (producer and topic job retry the broker, the detector
        # restarts until the training job's bundle exists).
        compose(engine, project, env, "up", "-d", "--no-deps", *services)
        wait_for(engine, detector, lambda: http_ok(f"http://127.0.0.1:{ports['detector']}/readyz"), 300,
                 "the stack's detector ready")
        wait_for(engine, detector, lambda: alerts_in_stack(engine, detector) > 0, 180,
                 "alerts on the stack's alert topic")
        wait_until(lambda: prometheus_target_up(ports["prometheus"], "kdd-detector"), 120,
                   "Prometheus scraping the detector (target up)")
        for job, container in (("kdd-producer", "producer"), ("kdd-incidents", "incidents")):
            wait_for(engine, f"{project}_{container}_1", lambda job=job: prometheus_target_up(ports["prometheus"], job),
                     120, f"Prometheus scraping {job} (target up)")
    finally:
        compose(engine, project, env, "down", "--volumes", "--timeout", "10", check=False)
    left = engine.text("ps", "--all", "--filter", f"name={project}", "--format", "{{.Names}}")
    assert not left, f"containers left after down: {left}"
