"""Three real brokers: RF 3, min.insync.replicas 2, acks=all; losing one node mid-stream loses nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from deploy.kafka import local_kafka
from tests.conftest import create_topic
from tests.kafka_util import drain

N = 20_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    """Always the local launcher: the test must stop a node, which an external cluster won't let it do."""
    try:
        c = local_kafka.start_cluster(nodes=3, directory=tmp_path_factory.mktemp("kafka3") / "c")
    except local_kafka.LocalKafkaError as exc:
        pytest.fail(f"could not start a 3-node Kafka cluster: {exc}", pytrace=False)
    try:
        yield c
    finally:
        c.stop()


def test_node_loss_mid_stream_loses_nothing(cluster: local_kafka.LocalKafka) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers})
    topic = create_topic(admin, "rf3", partitions=6, replication=3, config={"min.insync.replicas": "2"})
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap_servers, "acks": "all", "enable.idempotence": True,
        "linger.ms": 5, "message.timeout.ms": 120_000,
    })
    delivered: list[int] = []
    failed: list[str] = []
    lock = threading.Lock()

    def on_delivery(err: object, msg: object) -> None:
        with lock:
            if err is not None:
                failed.append(str(err))
            else:
                delivered.append(int(msg.key()))  # type: ignore[attr-defined]

    victim = 1  # node 2: not necessarily the leader of everything, but a replica of every partition
    for i in range(N):
        if i == N // 2:
            assert producer.flush(60) == 0
            cluster.stop_node(victim, kill=True)
            assert not cluster.node_alive(victim)
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(120) == 0
    assert failed == []
    assert sorted(delivered) == list(range(N))

    md = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.isrs) == 2 for p in md.partitions.values()), "ISR should have shrunk to the 2 live nodes"

    messages = drain(cluster.bootstrap_servers, topic, N)
    keys = [int(m.key()) for m in messages]
    assert len(keys) == N and sorted(keys) == list(range(N))

    cluster.start_node(victim)  # and it rejoins: all three brokers serve metadata again
    cluster.wait_ready()
