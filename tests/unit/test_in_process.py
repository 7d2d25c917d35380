"""The contracts the end-to-end tests check by killing processes, checked here in process with fakes, fast:
the detector's commit contract (at-least-once and exactly-once), the incident service's restore, and the model
watcher. The real-broker versions stay (tests/kafka); these say which piece broke when one of those fails."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from core.kafka import AccessDenied
from detector.checkpoint import AtLeastOnce, ExactlyOnce
from detector.delivery import OutputWriter
from detector.metrics import DetectorMetrics
from detector.model_watch import ModelWatcher
from detector.outputs import OutMessage
from incidents import partitions as partitions_module
from incidents import service as incident_service
from incidents.partitions import OwnedBooks
from incidents.settings import IncidentSettings
from model.bundle import BundleError

OFFSETS = [TopicPartition("in", 0, 100)]


class FakeProducer:
    """Deliveries happen on flush(); ``fail`` holds the errors of the next deliveries, in order."""

    def __init__(self) -> None:
        self.pending: list[tuple[OutMessage | None, Any]] = []
        self.sent: list[tuple[str, bytes | None]] = []
        self.fail: list[KafkaError] = []
        self.calls: list[str] = []
        self.commit_errors: list[KafkaException] = []
        self.slow = 0

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any) -> None:
        self.sent.append((topic, value))
        self.pending.append((None, kw.get("on_delivery")))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        if self.slow:  # deliveries still in flight after this flush's timeout
            self.slow -= 1
            return len(self.pending)
        pending, self.pending = self.pending, []
        for _, cb in pending:
            if cb is not None:
                cb(self.fail.pop(0) if self.fail else None, None)
        return 0

    # transactions
    def init_transactions(self, _timeout: float) -> None:
        self.calls.append("init")

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], _meta: Any, _timeout: float) -> None:
        self.calls.append(f"offsets:{offsets[0].offset}")

    def commit_transaction(self, _timeout: float) -> None:
        self.flush()
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.calls.append("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self.pending.clear()
        self.calls.append("abort")


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._at = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]


class FakeConsumer:
    """Records what the checkpoint asks of the consumer; ``arrive`` is what the next consume() returns, and
    ``during_consume`` runs inside it (as rebalance callbacks do)."""

    def __init__(self) -> None:
        self.commits: list[list[TopicPartition]] = []
        self.calls: list[str] = []
        self.seeks: list[tuple[str, int, int]] = []
        self.arrive: list[FakeMessage] = []
        self.during_consume: Any = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append(offsets)

    def consumer_group_metadata(self) -> object:
        return object()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition("in", 0)]

    def pause(self, _partitions: list[TopicPartition]) -> None:
        self.calls.append("pause")

    def resume(self, _partitions: list[TopicPartition]) -> None:
        self.calls.append("resume")

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        self.calls.append("consume")
        if self.during_consume is not None:
            self.during_consume()
        msgs, self.arrive = self.arrive, []
        return msgs

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def alert(i: int) -> OutMessage:
    return OutMessage("alerts", str(i).encode(), b"{}", [], "alert", source=("in", 0, i))


def at_least_once() -> tuple[AtLeastOnce, FakeProducer, FakeConsumer, DetectorMetrics]:
    producer, consumer, metrics = FakeProducer(), FakeConsumer(), DetectorMetrics(0.01)
    writer = OutputWriter(producer, metrics, "dlq")  # type: ignore[arg-type]
    cp = AtLeastOnce(consumer, producer, writer, metrics, threading.Event(), 0.05,  # type: ignore[arg-type]
                     in_batch=lambda: False, assigned=lambda: {("in", 0)})
    return cp, producer, consumer, metrics


def test_at_least_once_commits_offsets_only_after_every_output_is_acknowledged() -> None:
    cp, producer, consumer, _ = at_least_once()
    done: list[int] = []
    cp.commit([alert(1), alert(2)], OFFSETS, lambda: done.append(1))
    assert consumer.commits == [] and done == []  # sent, not yet acknowledged: nothing committed
    cp.idle()
    assert consumer.commits == [OFFSETS] and done == [1]


def test_at_least_once_retries_a_transient_failure_and_commits_once() -> None:
    cp, producer, consumer, metrics = at_least_once()
    producer.fail = [KafkaError(KafkaError._MSG_TIMED_OUT)]
    done: list[int] = []
    cp.commit([alert(1), alert(2)], OFFSETS, lambda: done.append(1))
    cp.idle()
    assert [v for _, v in producer.sent].count(b"{}") == 3  # the failed one sent again
    assert consumer.commits == [OFFSETS] and done == [1]
    assert metrics.produce_retries._value.get() == 1 and metrics.paused._value.get() == 0


def test_an_output_outage_keeps_the_consumer_polling_with_input_paused_and_rewinds_what_arrives() -> None:
    """librdkafka evicts a member that does not poll within max.poll.interval.ms: while outputs are retried the
    consumer polls with its partitions paused, and a record that arrives anyway is sought back, not skipped."""
    cp, producer, consumer, _ = at_least_once()
    producer.fail = [KafkaError(KafkaError._MSG_TIMED_OUT)] * 3
    consumer.arrive = [FakeMessage("in", 0, 7), FakeMessage("in", 0, 8)]
    done: list[int] = []
    cp.commit([alert(1)], OFFSETS, lambda: done.append(1))
    cp.idle()
    assert consumer.calls.count("consume") >= 3 and consumer.calls[0] == "pause"
    assert consumer.seeks == [("in", 0, 7)]  # the first record that arrived while paused is read again later
    assert consumer.calls[-1] == "resume" and done == [1] and consumer.commits == [OFFSETS]


def test_slow_deliveries_that_never_fail_pause_input_only_while_they_are_in_flight() -> None:
    """A broker that comes back within message.timeout.ms: no delivery fails, the input paused while polling the
    group must still be resumed (a first version left it paused for good)."""
    cp, producer, consumer, _ = at_least_once()
    producer.slow = 3
    done: list[int] = []
    cp.commit([alert(1)], OFFSETS, lambda: done.append(1))
    cp.idle()
    assert consumer.calls.count("consume") == 3 and consumer.calls[-1] == "resume" and done == [1]


def test_a_denied_write_ends_the_detector_naming_the_grant_instead_of_retrying_forever() -> None:
    cp, producer, consumer, _ = at_least_once()
    cp.writer.conf = {"sasl.username": "det", "bootstrap.servers": "b:9092"}
    producer.fail = [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    cp.commit([alert(1)], OFFSETS, lambda: None)
    with pytest.raises(AccessDenied, match="denied WRITE on topic 'alerts' to principal User:det"):
        cp.idle()
    assert consumer.commits == []  # nothing committed: the batch is read again once the grant is there


def test_exactly_once_leaves_a_batch_to_the_new_owner_when_partitions_move_during_an_outage() -> None:
    producer, consumer, metrics = FakeProducer(), FakeConsumer(), DetectorMetrics(0.01)
    writer = OutputWriter(producer, metrics, "dlq")  # type: ignore[arg-type]
    cp = ExactlyOnce(consumer, producer, writer, metrics, threading.Event(), 0.05)  # type: ignore[arg-type]
    producer.commit_errors = [KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))]
    consumer.during_consume = lambda: cp.on_revoke(consumer, [TopicPartition("in", 0)])  # type: ignore[arg-type]
    done: list[int] = []
    cp.commit([alert(1)], OFFSETS, lambda: done.append(1))
    assert producer.calls == ["init", "begin", "offsets:100", "abort"]  # no second transaction with stale offsets
    assert done == [] and consumer.calls[-1] == "resume"


def test_at_least_once_replaces_an_output_the_broker_refuses_for_its_size() -> None:
    cp, producer, consumer, metrics = at_least_once()
    producer.fail = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    cp.commit([alert(1)], OFFSETS, lambda: None)
    cp.idle()
    assert producer.sent[-1][0] == "dlq" and producer.sent[-1][1] == b""  # coordinates only, in the headers
    assert consumer.commits == [OFFSETS]
    assert metrics.too_large.labels(kind="alert")._value.get() == 1


def test_exactly_once_puts_outputs_and_offsets_in_one_transaction_and_retries_an_aborted_one() -> None:
    producer, consumer, metrics = FakeProducer(), FakeConsumer(), DetectorMetrics(0.01)
    writer = OutputWriter(producer, metrics, "dlq")  # type: ignore[arg-type]
    cp = ExactlyOnce(consumer, producer, writer, metrics, threading.Event(), 0.05)  # type: ignore[arg-type]
    retriable = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
    producer.commit_errors = [KafkaException(retriable)]
    done: list[int] = []
    cp.commit([alert(1)], OFFSETS, lambda: done.append(1))
    assert producer.calls == ["init", "begin", "offsets:100", "abort", "begin", "offsets:100", "commit"]
    assert done == [1] and consumer.commits == []  # offsets went with the transaction, not by commit()
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    producer.commit_errors = [KafkaException(fatal)]
    with pytest.raises(incident_service.FatalError):  # the same type everywhere: core.kafka_io.FatalError
        cp.commit([alert(2)], OFFSETS, lambda: None)


# ------------------------------------------------------------------------------------ incident restore
class Msg:
    def __init__(self, key: str, value: bytes | None, offset: int, partition: int = 0) -> None:
        self._key, self._value, self._offset, self._partition = key, value, offset, partition

    def key(self) -> bytes:
        return self._key.encode()

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_incident_restore_rebuilds_the_book_and_skips_bad_state_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from incidents.alert_input import alert_from_doc
    from incidents.book import IncidentBook
    from incidents.verdicts import VerdictDoc
    from tests.unit.test_triage import T0, doc

    book = IncidentBook(gap_ms=300_000)
    for i in range(3):
        book.add(alert_from_doc(doc(i, T0 + i, service=f"s{i}"), 0))
    first = next(iter(book.incidents))
    book.mark_benign(VerdictDoc(first, T0 + 10**9, T0, "ann", "why"))
    from incidents import state

    topics = {
        "inc": [Msg(i, json.dumps(inc.to_dict()).encode(), n) for n, (i, inc) in enumerate(book.incidents.items())]
        + [Msg("junk", b"null", 90), Msg("old", b'{"schema": "kdd-incident/1"}', 91), Msg("gone", None, 92)],
        "inc.state": [Msg(*state.rule_record(book, first), 0), Msg(*state.budget_record(book), 1),
                      Msg("rule:x", b'{"schema": "kdd-incident-state/1", "type": "rule", "rule": 5}', 2),
                      Msg("huh", b"[1, 2]", 3)],
    }
    # another partition's records (partition 1): its own book's, never partition 0's
    other = IncidentBook(gap_ms=300_000)
    other.add(alert_from_doc(doc(9, T0, service="elsewhere"), 0))
    topics["inc"] += [Msg(i, json.dumps(inc.to_dict()).encode(), 100, 1) for i, inc in other.incidents.items()]
    asked: list[tuple[str, list[int]]] = []

    def read(_conf: object, topic: str, partitions: list[int]) -> list[Msg]:
        asked.append((topic, partitions))
        return [m for m in topics[topic] if m.partition() in partitions]

    monkeypatch.setattr(partitions_module, "read_to_end", read)
    svc = incident_service.IncidentService(IncidentSettings(alert_topic="a", incident_topic="inc"))
    svc.books = OwnedBooks(svc.settings, 2)
    svc._assigned({}, [TopicPartition("a", 0), TopicPartition("a", 1)])
    assert asked == [("inc", [0, 1]), ("inc.state", [0, 1])]
    restored = svc.books[0]
    assert {i: inc.to_dict() for i, inc in restored.incidents.items()} == {
        i: inc.to_dict() for i, inc in book.incidents.items()}
    assert set(restored.open) == set(book.open) and restored.rules[first] == book.rules[first]
    assert restored.budget.to_dict() == book.budget.to_dict()
    assert set(svc.books[1].incidents) == set(other.incidents) and svc.ready()[0]
    bad = svc.metrics.bad_state
    assert bad.labels(topic="inc")._value.get() == 2 and bad.labels(topic="inc.state")._value.get() == 2
    svc._revoked([TopicPartition("a", 1)])  # taken away: dropped (its state is in Kafka)
    assert 1 not in svc.books and 0 in svc.books


# --------------------------------------------------------------------------------------- model watcher
def test_the_model_watcher_swaps_on_a_pointer_move_and_refuses_a_bad_bundle_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for version in ("v1", "v2", "v3"):
        (store / version).mkdir(parents=True)
        (store / version / "bundle.json").write_text("{}")
    (store / "current").symlink_to("v1", target_is_directory=True)
    loads: list[str] = []

    def load(target: Path) -> Any:
        loads.append(target.name)
        if target.name == "v3":
            raise BundleError("v3 is corrupt")
        return f"model {target.name}"

    metrics = DetectorMetrics(0.01)
    watcher = ModelWatcher(store, (store / "v1").resolve(), load, 3600, metrics)
    watcher.check()
    assert loads == [] and watcher.take() is None  # the pointer did not move
    (store / "current").unlink()
    (store / "current").symlink_to("v2", target_is_directory=True)
    watcher.check()
    assert watcher.take() == "model v2" and watcher.take() is None
    (store / "current").unlink()
    (store / "current").symlink_to("v3", target_is_directory=True)
    watcher.check()
    watcher.check()  # refused once, not retried until the pointer moves again
    assert loads == ["v2", "v3"] and watcher.take() is None
    assert metrics.model_load_failures.labels(reason="bundle")._value.get() == 1


@pytest.mark.hostile
def test_the_model_watcher_survives_any_exception_and_still_rolls_back(tmp_path: Path) -> None:
    """Issue 31 item 15: a malformed ``files`` list raised something other than BundleError and killed the
    watcher thread, so a rollback never took effect. Any failure is a counted refusal; the next move works."""
    store = tmp_path / "store"
    for version in ("v1", "v2"):
        (store / version).mkdir(parents=True)
    (store / "current").symlink_to("v2", target_is_directory=True)

    def load(target: Path) -> Any:
        if target.name == "v2":
            raise AttributeError("'list' object has no attribute 'items'")
        return f"model {target.name}"

    metrics = DetectorMetrics(0.01)
    watcher = ModelWatcher(store, (store / "v1").resolve(), load, 3600, metrics)
    watcher.check()
    assert watcher.take() is None and metrics.model_load_failures.labels(reason="error")._value.get() == 1
    (store / "current").unlink()
    (store / "current").symlink_to("v1", target_is_directory=True)  # the rollback
    watcher.check()
    assert watcher.take() == "model v1"
