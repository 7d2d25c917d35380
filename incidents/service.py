"""The incident service: alerts (and analysts' verdicts) in, incident records out, exactly once.

Each batch is one Kafka transaction: the records of every incident it changed (full state, keyed by
incident id, on a compacted topic), the alerts it suppressed, unreadable alerts, and the input offsets.
The compacted incident topic, with the compacted state topic (verdicts in force with their rate windows, the
page budget), is therefore the state's changelog: on start the service reads both to their end
(read_committed) and continues from the committed offsets of the alert and feedback topics, so a crash
neither loses nor counts an alert or a verdict twice. Every record it reads is validated first
(``alert_input``, ``verdicts``): a bad alert is a dead letter with a reason, a bad verdict is counted and
logged, a bad state record is skipped and counted; none stops the service.

The service runs as a consumer group on the alert topic's partitions (issue 32, ``incidents.partitions``):
alerts are keyed by kind (``core.routing``), each owned partition has a book of its own, restored from the same
partition of the incident and state topics when the group assigns it, and every record of a book is written
to that partition. The incident, state and feedback topics are created with the alert topic's partition count
(and refused when they differ). Each instance needs a transactional id of its own (a pod's name); the group
generation fences a zombie's offsets (KIP-447), its transactional id fences its writes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from core import events, headers, jsondoc, poison, timebounds
from core.acl import require
from core.health import HealthServer
from core.kafka import MEMORY_BOUNDS, access_denied, check_connection, is_authorization_error
from core.kafka_io import FatalError, merge_offsets, next_offsets, produce, records, transaction
from core.poison import PoisonScreen
from incidents import ocsf, state, topics
from incidents.alert_input import AlertError, clamp_future, parse_alert
from incidents.book import Incident, IncidentBook
from incidents.metrics import IncidentMetrics
from incidents.partitions import OwnedBooks
from incidents.settings import IncidentSettings
from incidents.verdicts import BENIGN, REVOKE, Rule, VerdictDoc

log = logging.getLogger(__name__)

MAX_DEAD_LETTER_BYTES = 512 * 1024

# (topic, key, value[, headers[, partition]]): a partition for the records of a book (its alert partition's)
Output = (tuple[str, str | None, bytes | None] | tuple[str, str | None, bytes | None, list[tuple[str, bytes]]]
          | tuple[str, str | None, bytes | None, list[tuple[str, bytes]] | None, int])


def _raise_if_denied(conf: dict[str, Any], err: KafkaError, topic: str | None) -> None:
    """An ACL refused a write, the group or the transactional id: exit 3 naming the grant (no restart can help
    until an operator grants it)."""
    if is_authorization_error(err):
        raise access_denied(conf, err, "producer", topic) from None


def _set_gauges(m: IncidentMetrics, books: OwnedBooks) -> None:
    """The owned books' sizes, their highest page line and their pages, as gauges (after each transaction)."""
    m.open.set(books.total(lambda b: len(b.open)))
    m.rules.set(books.total(lambda b: len(b.rules)))
    m.held.set(books.total(lambda b: sum(len(r.held) for r in b.rules.values())))
    m.page_line.set(max((b.budget.line for _, b in books.items()), default=0.0))
    m.pages_last_hour.set(books.total(lambda b: b.budget.pages_in_hour(b.stream_ms)))


def _by_partition(msgs: list[Message]) -> dict[int, list[Message]]:
    """A batch split by partition number, each in the order read (alert and feedback partition p together)."""
    out: dict[int, list[Message]] = {}
    for msg in msgs:
        out.setdefault(msg.partition(), []).append(msg)
    return out


def _finding(topic: str | None, finding: dict[str, Any]) -> list[Output]:
    """An OCSF finding for the OCSF topic, when there is one (keyed by the finding's uid)."""
    return [] if topic is None else [(topic, finding["metadata"]["uid"][:256], _json(finding))]


def _dead_letter(topic: str, msg: Message, exc: AlertError) -> Output:
    """An unreadable alert, kept: its value capped (the coordinates in the headers find the whole record)."""
    return (topic, None, (msg.value() or b"")[:MAX_DEAD_LETTER_BYTES],
            headers.dead_letter_headers(msg, exc.reason, str(exc)[:500])
            + events.headers(events.DEAD_LETTER, events.INCIDENTS_SOURCE,
                             f"{msg.topic()}/{msg.partition()}/{msg.offset()}", content_type=events.BYTES))


def _skipped(topic: str, s: poison.Skipped) -> Output:
    """An undecodable batch on the alert or feedback topic (``core.poison``): a dead letter naming its range."""
    return (topic, None, None, headers.skipped_range_headers(s.topic, s.partition, s.start, s.end, poison.REASON,
                                                             s.detail)
            + events.headers(events.DEAD_LETTER, events.INCIDENTS_SOURCE, f"{s.topic}/{s.partition}/{s.start}-{s.end}",
                             content_type=events.BYTES))


class IncidentService:
    def __init__(self, settings: IncidentSettings) -> None:
        self.settings = s = settings
        self.books = OwnedBooks(s, 1)  # replaced once the alert topic's partition count is known
        self.metrics = IncidentMetrics()
        self.metrics.page_budget.set(s.page_budget)
        self.stop_event = threading.Event()
        self.consumer: Consumer | None = None
        self.producer: Producer | None = None
        self.server: HealthServer | None = None
        self.restored = False
        self.last_input = time.monotonic()
        self.pending: list[tuple[Any, float]] = []  # counter increments of the transaction in progress
        self.conf: dict[str, Any] = {}  # the clients' settings, named in a denial
        self.pending_findings: list[Output] = []  # OCSF findings of the records being written
        self.screen = PoisonScreen()
        self.waiting = "starting"  # what /readyz says until the first assignment is restored

    def ready(self) -> tuple[bool, str]:
        if not self.restored:
            return False, self.waiting
        return True, (f"ready: {self.books.total(lambda b: len(b.open)):.0f} open incidents in "
                      f"{len(self.books.books)} of {self.books.partitions} partition(s)")

    def start(self) -> None:
        s = self.settings
        conf = s.kafka.client_config()
        md = check_connection(conf, s.kafka.connect_timeout_s)
        self.server = HealthServer(self.metrics.registry, s.metrics_port, self.ready, host=s.metrics_host)
        self.server.start()
        partitions = topics.alert_partitions(conf, s.alert_topic, self.stop_event, self._waiting)
        topics.ensure_topics(s, conf, len(md.brokers), partitions)
        require(conf, s.acls(), "the incident service")
        self.books = OwnedBooks(s, partitions)
        self.conf = {**conf, "transactional.id": s.transactional_id, "group.id": s.group_id}
        self.producer = Producer({**conf, "transactional.id": s.transactional_id, "enable.idempotence": True,
                                  "acks": "all", "linger.ms": 5, "transaction.timeout.ms": 60_000})
        try:
            self.producer.init_transactions(60)  # fences a predecessor and aborts its open transaction
        except KafkaException as exc:
            _raise_if_denied(self.conf, exc.args[0], None)
            raise
        # range: alert partition p and feedback partition p go to the same member (co-partitioned topics)
        self.consumer = Consumer({**MEMORY_BOUNDS, **conf, "group.id": s.group_id, "enable.auto.commit": False,
                                  "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                                  "partition.assignment.strategy": "range",
                                  **({"group.instance.id": s.group_instance_id} if s.group_instance_id else {})})
        self.waiting = "waiting for the group to assign partitions"
        self.consumer.subscribe([s.alert_topic, s.feedback_topic], on_assign=lambda _c, ps: self._assigned(conf, ps),
                                on_revoke=lambda _c, ps: self._revoked(ps))

    def _waiting(self, why: str) -> None:
        self.waiting = why

    def _assigned(self, conf: dict[str, Any], partitions: list[TopicPartition]) -> None:
        """The book of each partition the group gave us, as the last committed transaction left it
        (``incidents.partitions``). Verdicts are not re-read from the feedback topic: the committed offset covers
        the ones applied, whose state is on the state topic."""
        self.books.assign(conf, {tp.partition for tp in partitions}, self._bad_state)
        self.restored = True
        self._gauges()

    def _revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away: their state is in Kafka (every batch commits before the next poll)."""
        self.screen.forget(partitions)
        self.books.revoke({tp.partition for tp in partitions})
        self._gauges()

    def _bad_state(self, topic: str, msg: Message, exc: Exception) -> None:
        log.warning("restore skipped a record it cannot read at %s[%d]@%d (key %r): %s", topic, msg.partition(),
                    msg.offset(), (msg.key() or b"")[:100], str(exc)[:300])
        self.metrics.bad_state.labels(topic=topic).inc()

    def run(self) -> None:
        if self.consumer is None:
            self.start()
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    def step(self) -> int:
        assert self.consumer is not None and self.producer is not None
        msgs, skipped = self.screen.screen(self.consumer, self.consumer.consume(self.settings.batch_size, 0.5))
        # a partition revoked while its records were queued is its new owner's: neither filed nor committed here
        msgs = [m for m in records(msgs, self.conf) if m.partition() in self.books]
        skipped = [sk for sk in skipped if sk.partition in self.books]
        if not msgs and not skipped:
            if time.monotonic() - self.last_input >= self.settings.idle_close_s:
                self._close_idle()
            return 0
        self.last_input = time.monotonic()
        outputs: list[Output] = [_skipped(self.settings.dead_letter_topic, s) for s in skipped]
        self._count(self.metrics.unreadable.labels(reason=poison.REASON), len(skipped))
        for p, part in _by_partition(msgs).items():
            book = self.books[p]
            changed: dict[str, Incident] = {}
            rules: set[str] = set()
            for msg in part:
                if msg.topic() == self.settings.feedback_topic:
                    self._verdict(book, msg, changed, rules)
                else:
                    outputs += self._alert(book, msg, changed, rules)
            outputs += self._housekeeping(p, book, changed, rules)
        self._commit(outputs, merge_offsets(next_offsets(msgs),
                                            [TopicPartition(s.topic, s.partition, s.end) for s in skipped]))
        self._gauges()
        return len(msgs)

    def _close_idle(self) -> None:
        """An idle input: close (and publish: issue 31 item 7) what is quiet by the wall clock and the lateness, and
        settle what verdicts held in windows that are over by the same measure."""
        now, lateness = int(time.time() * 1000), int(self.settings.allowed_lateness_s * 1000)
        outputs: list[Output] = []
        for p, book in self.books.items():
            closed = book.close_idle(now, lateness)
            released, rules = book.settle_idle(now, lateness)
            outputs += [self._suppressed(doc, rule_id) for doc, rule_id in released]
            outputs += self._housekeeping(p, book, {inc.incident_id: inc for inc in closed}, rules)
        if outputs:
            self._commit(outputs, [])
            self._gauges()

    def _housekeeping(self, p: int, book: IncidentBook, changed: dict[str, Incident], rules: set[str]
                      ) -> list[Output]:
        """Close quiet incidents, settle verdict windows, prune; the records all that changed (on partition p)."""
        s = self.settings
        for inc in book.close_quiet():
            changed[inc.incident_id] = inc
        suppressed, settled, removed = book.settle_rules()
        outputs = [self._suppressed(doc, rule_id) for doc, rule_id in suppressed]
        rules |= settled
        for incident_id in book.prune():
            changed.pop(incident_id, None)
            outputs.append((s.incident_topic, incident_id, None, None, p))
            self._count(self.metrics.pruned)
        outputs += [self._record(p, inc) for inc in changed.values()]
        outputs += [(s.state, *state.rule_record(book, rule_id), None, p) for rule_id in sorted(rules | removed)]
        if changed or rules or removed:
            outputs.append((s.state, *state.budget_record(book), None, p))
        outputs += [(s.state, key, value, None, p) for key, value in state.baseline_records(book)]
        return outputs

    def _count(self, counter: Any, n: float = 1) -> None:
        """Counters move when the transaction that did the work commits (:meth:`_commit`), so a scrape never
        counts alerts that an aborted transaction will hand to the next instance."""
        if n:
            self.pending.append((counter, n))

    def _gauges(self) -> None:
        _set_gauges(self.metrics, self.books)

    def _alert(self, book: IncidentBook, msg: Message, changed: dict[str, Incident], rules: set[str]
               ) -> list[Output]:
        m = self.metrics
        at = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()}
        try:
            alert = parse_alert(msg.value(), msg.timestamp()[1], at)
        except AlertError as exc:
            log.warning("unreadable alert at %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            self._count(m.unreadable.labels(reason=exc.reason))
            return [_dead_letter(self.settings.dead_letter_topic, msg, exc)]
        alert, clamped = clamp_future(alert, int(time.time() * 1000), self.settings.future_skew_ms)
        if clamped:
            self._count(m.future)
        filing = book.add(alert)
        rules |= filing.rules
        self._count(m.alerts, filing.filed)
        self._count(m.over_verdict, filing.over_verdict)
        self._count(m.paged, filing.paged)
        self._count(m.crowded_out, filing.crowded_out)
        self._count(m.late, filing.late)
        for inc in filing.changed:
            if inc.alerts == 1 and inc.incident_id not in changed:
                self._count(m.opened)
            changed[inc.incident_id] = inc
        found = _finding(self.settings.ocsf_topic, ocsf.detection_finding(alert.compact(), alert.event_ms,
            incident_id=filing.changed[-1].incident_id if filing.changed else None))
        return found + [self._suppressed(doc, rule_id) for doc, rule_id in filing.suppressed]

    def _suppressed(self, doc: dict[str, Any], rule_id: str) -> Output:
        self._count(self.metrics.suppressed)
        value = _json({**doc, "suppressed_by": rule_id})
        self.pending_findings += _finding(self.settings.ocsf_topic, ocsf.detection_finding(
            doc, ocsf.event_ms(doc), suppressed_by=rule_id))
        return (self.settings.suppressed_topic, doc.get("record_id"), value,
                events.headers(events.SUPPRESSED_ALERT, events.INCIDENTS_SOURCE, events.content_id(value)))

    def _verdict(self, book: IncidentBook, msg: Message, changed: dict[str, Incident], rules: set[str]) -> None:
        m = self.metrics
        try:
            verdict = VerdictDoc.parse(jsondoc.loads(msg.value() or b""))
        except ValueError as exc:
            log.warning("ignoring an unreadable verdict at offset %d: %s", msg.offset(), str(exc)[:300])
            self._count(m.verdicts.labels(outcome="unreadable"))
            return
        if verdict.verdict == REVOKE:
            outcome, filing = book.revoke(verdict)
            self._count(m.verdicts.labels(outcome=outcome))
            self._count(m.alerts, filing.filed)
            rules |= filing.rules
            changed.update((inc.incident_id, inc) for inc in filing.changed)
            log.info("verdict on %s revoked by %r: %s", verdict.incident_id, verdict.analyst, outcome)
            return
        if verdict.verdict != BENIGN:
            self._count(m.verdicts.labels(outcome="ignored"))
            return
        outcome, rule = book.mark_benign(verdict)
        self._count(m.verdicts.labels(outcome=outcome))
        if outcome != "applied" or not isinstance(rule, Rule):
            log.warning("verdict on incident %s by %r not applied: %s", verdict.incident_id, verdict.analyst,
                        outcome)
            return
        rules.add(rule.verdict_id)
        changed[verdict.incident_id] = book.incidents[verdict.incident_id]
        log.info("incident %s marked benign by %r: alerts of kind %s up to severity %.3g and %d per minute "
                 "suppressed until %s", verdict.incident_id, verdict.analyst, "/".join(rule.kind), rule.max_severity,
                 rule.allowance, timebounds.iso(rule.until_ms))

    def _record(self, p: int, inc: Incident) -> Output:
        if inc.status == "closed":
            self._count(self.metrics.closed)
        doc = inc.to_dict()
        value = _json(doc)
        self.pending_findings += _finding(self.settings.ocsf_topic, ocsf.incident_finding(doc, created=inc.alerts == 1))
        return (self.settings.incident_topic, inc.incident_id, value,
                events.headers(events.INCIDENT, events.INCIDENTS_SOURCE, events.content_id(value)), p)

    def _commit(self, outputs: list[Output], offsets: list[TopicPartition]) -> None:
        assert self.producer is not None and self.consumer is not None
        outputs, self.pending_findings = outputs + self.pending_findings, []
        commit(self.producer, self.consumer, outputs, offsets, self.conf)
        for counter, n in self.pending:
            counter.inc(n)
        self.pending.clear()


def commit(producer: Producer, consumer: Consumer, outputs: list[Output], offsets: list[TopicPartition],
           conf: dict[str, Any]) -> None:
    """``outputs`` and the input ``offsets`` in one transaction; any failure is fatal (``FatalError``, or exit 3
    naming a missing grant): the in-memory books are ahead of Kafka then, and only a restart restores them."""
    denied: list[tuple[KafkaError, str]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None and is_authorization_error(err):
            denied.append((err, msg.topic()))

    def write() -> None:
        for out in outputs:
            produce(producer, out[0], out[2], jsondoc.key_bytes(out[1]) if out[1] else None,
                    out[3] if len(out) > 3 else None, on_delivery,  # type: ignore[misc]
                    partition=out[4] if len(out) > 4 else None)  # type: ignore[misc]

    try:
        transaction(producer, consumer, write, offsets)
    except KafkaException as exc:
        if denied:
            _raise_if_denied(conf, *denied[0])
        _raise_if_denied(conf, exc.args[0], None)
        raise FatalError(f"incident transaction not committed ({exc}); restart to restore from Kafka") from exc
    except Exception as exc:
        raise FatalError(f"incident transaction not committed ({exc}); restart to restore from Kafka") from exc

_json = state.encode