"""Shared fixtures: a real Kafka broker for the session, unique topics, and the shared KDD99 file; and the tiers.

Tests live in folders that say what they need: ``tests/unit`` (nothing but this process), ``tests/kafka`` (a
real broker), ``tests/containers`` (the images, built and run, beside a real broker). Each test gets its
folder's marker, so ``pytest -m unit`` runs the fast tier alone.

The broker comes from, in order: ``KAFKA_BOOTSTRAP_SERVERS`` (an existing cluster), testcontainers'
KafkaContainer when a Docker engine answers, else ``deploy/kafka/local_kafka.py`` (Apache Kafka jars from
Maven Central, KRaft on 127.0.0.1). A test that needs Kafka and gets none fails; it never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from core.records import default_data_path
from deploy.kafka import local_kafka

REPO = Path(__file__).resolve().parents[1]
TIERS = {"unit": ("unit",), "kafka": ("kafka",), "containers": ("containers", "kafka")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier (see the module docstring)."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        for marker in TIERS.get(folder, ()):
            item.add_marker(getattr(pytest.mark, marker))


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _say(config: pytest.Config, line: str) -> None:
    """Print past pytest's output capture (fixture set-up is captured), so every run names its broker."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        _say(request.config, f"kafka: using existing cluster KAFKA_BOOTSTRAP_SERVERS={env}")
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer(local_kafka.DOCKER_IMAGE).with_kraft() as container:
            bootstrap = container.get_bootstrap_server()
            _say(request.config, f"kafka: testcontainers {local_kafka.DOCKER_IMAGE} at {bootstrap}")
            yield bootstrap
        return
    try:
        cluster = local_kafka.start_cluster(nodes=1, directory=tmp_path_factory.mktemp("kafka") / "cluster")
    except local_kafka.LocalKafkaError as exc:
        pytest.fail(f"no Kafka broker for the tests: {exc}", pytrace=False)
    _say(
        request.config,
        f"kafka: real Apache Kafka {cluster.reported_version()} (KRaft, local launcher) at "
        f"{cluster.bootstrap_servers}",
    )
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


def own_cluster(tmp_path_factory: pytest.TempPathFactory, name: str, nodes: int = 1,
                security: local_kafka.Security | None = None) -> Iterator[local_kafka.LocalKafka]:
    """A cluster of the test's own from the local launcher, for tests that stop nodes or need SASL users,
    which a shared or external cluster would not allow. Use as the body of a module-scoped fixture."""
    try:
        cluster = local_kafka.start_cluster(nodes=nodes, directory=tmp_path_factory.mktemp(name) / "c",
                                            security=security)
    except local_kafka.LocalKafkaError as exc:
        pytest.fail(f"could not start the {nodes}-node Kafka cluster {name!r}: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


TopicFactory = Callable[..., str]


@pytest.fixture
def make_topic(kafka_admin: AdminClient) -> TopicFactory:
    """Create a uniquely named topic and wait until it exists, so tests never share state."""

    def create(prefix: str = "t", partitions: int = 1, replication: int = 1, **config: str) -> str:
        return create_topic(kafka_admin, prefix, partitions, replication, config)

    return create


def create_topic(
    admin: AdminClient, prefix: str, partitions: int, replication: int, config: dict[str, str] | None = None
) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication, config=config or {})],
        operation_timeout=30,
    )
    futures[name].result(timeout=60)
    return name


@pytest.fixture(scope="session")
def kdd_path() -> Path:
    path = default_data_path()
    if not path.exists():
        pytest.fail(f"the shared KDD99 file is missing at {path}; set KDD_DATA to its path", pytrace=False)
    return path


ZEEK_LABELLED = REPO / "tests" / "fixtures" / "zeek" / "ctu-normal-40-day1.conn.log.labeled"


@pytest.fixture(scope="session")
def zeek_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zeek_conn bundle trained on the labelled fixture's benign rows (few epochs: test-sized)."""
    out = tmp_path_factory.mktemp("zeek") / "model"
    train = subprocess.run([sys.executable, "-m", "training", "train", "--schema", "zeek_conn", "--data",
                            str(ZEEK_LABELLED), "--out", str(out), "--epochs", "3", "--run-dir",
                            str(out.parent / "runs")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory: pytest.TempPathFactory, kdd_path: Path) -> Path:
    """A quickly trained bundle (first 60,000 lines, few epochs): real training, test-sized."""
    from training.autoencoder import ModelConfig
    from training.train import TrainOptions, train

    out = tmp_path_factory.mktemp("bundle") / "model"
    config = ModelConfig.from_preset("default", epochs=6, seed=7)
    train(TrainOptions(data=kdd_path, out=out, model=config, limit=60_000))
    return out
