"""The alert partitions one incident-service instance owns, each with its own book (issue 32).

The service runs as a consumer group on the alert topic. Alerts are keyed by their kind's route
(``core.routing``), so each partition holds whole kinds: their incidents, verdicts, learned baselines. An
instance therefore keeps one :class:`IncidentBook` per partition it owns, and a book's state lives on the same
partition number of the compacted incident and state topics (the service writes each record there). When the
group gives an instance a partition, it restores that partition's book from those two partitions read to
their end (read_committed: what the last committed transaction left, whichever instance wrote it); when the
group takes a partition away, the book is dropped (its state is already in Kafka). The feedback topic has the
same partition count, a verdict is written to the partition its incident id names, and the group assigns by
range, so feedback partition p reaches the owner of alert partition p.

A book sees its partition's alerts in offset order, whatever else the instance owns: the incident records are
a function of each partition's alerts and verdicts alone, so 1, 2 or N instances write the same incidents.
The page budget is split between the partitions (``Budget.share_of``), so the whole budget holds over the
group. Memory is bounded per book (the service's limits), so an instance's bound is that times the partitions
it owns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import Message

from core.kafka_io import read_to_end
from incidents import state
from incidents.book import IncidentBook, Limits
from incidents.settings import IncidentSettings
from incidents.triage import Budget

log = logging.getLogger(__name__)

BadState = Callable[[str, Message, Exception], None]


def book_for(s: IncidentSettings, partition: int = 0, partitions: int = 1) -> IncidentBook:
    """An empty book for one alert partition, with the service's settings and the partition's budget share."""
    return IncidentBook(
        int(s.gap_s * 1000), Budget.share_of(s.page_budget, s.min_priority, partition, partitions),
        Limits(max_verdict_ms=int(s.max_verdict_s * 1000), max_rules=s.max_verdicts,
               rate_margin=s.verdict_rate_margin, max_open=s.max_open_incidents, max_incidents=s.max_incidents,
               group_by=s.group_by, baseline_half_life_ms=int(s.baseline_half_life_s * 1000),
               baseline_max_per_min=s.baseline_max_per_min),
        retention_ms=int(s.retention_s * 1000), partition=partition)


class OwnedBooks:
    """Alert partition -> its book, for the partitions the group gave this instance."""

    def __init__(self, settings: IncidentSettings, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions  # of the alert topic, and of each co-partitioned topic
        self.books: dict[int, IncidentBook] = {}

    def assign(self, conf: dict[str, Any], partitions: Iterable[int], bad: BadState) -> list[int]:
        """Restore the books of newly owned ``partitions`` from their incident and state partitions."""
        s = self.settings
        new = sorted(set(partitions) - set(self.books))
        if not new:
            return []
        incidents = read_to_end(conf, s.incident_topic, partitions=new)
        states = read_to_end(conf, s.state, partitions=new)
        for p in new:
            book = book_for(s, p, self.partitions)
            state.restore(book, s.incident_topic, (m for m in incidents if m.partition() == p), s.state,
                          (m for m in states if m.partition() == p), bad)
            self.books[p] = book
        log.info("partitions %s restored: %d incidents (%d open), %d verdicts in force", new,
                 sum(len(self.books[p].incidents) for p in new), sum(len(self.books[p].open) for p in new),
                 sum(len(self.books[p].rules) for p in new))
        return new

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self.books.pop(p, None)

    def __getitem__(self, partition: int) -> IncidentBook:
        return self.books[partition]

    def __contains__(self, partition: int) -> bool:
        return partition in self.books

    def items(self) -> Iterator[tuple[int, IncidentBook]]:
        return iter(sorted(self.books.items()))

    def total(self, measure: Callable[[IncidentBook], float]) -> float:
        return sum(measure(book) for book in self.books.values())
