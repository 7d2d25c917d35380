"""The alarm budget: which incidents page an analyst now and which wait in the review queue.

An analyst can act on a bounded number of pages an hour (``--page-budget``). An incident is paged when its
priority reaches the *line* and fewer than the budget were paged in the trailing hour of event time; every
other incident is ``review``. A page is not taken back.

The line adapts to the traffic: it is the priority of the budget's N-th best incident among those active in
the trailing hour (never below ``--min-priority``), so to page, an incident has to beat what the last hour
had to offer; in a flood of incidents the line rises, in a quiet hour it falls back to the floor. It is
recomputed every event-time minute and every 256 filed alerts (so a replay compressed into seconds still
moves it), from the book's state alone: the same alerts in the same order give the same pages, whatever
the batches. The trailing-hour cap is what makes the budget a guarantee rather than an average.

Escalation (issue 31 item 12). A budget can be spent by an attacker: twenty small bursts just over the line
use the hour's pages, and a flood a hundred times stronger then waits in review. So once the budget is spent,
an incident whose priority is at least ``ESCALATE`` times the strongest page of the trailing hour still pages,
from a reserve of ``reserve`` pages an hour (a fifth of the budget, at least one). The guarantee: at most
``per_hour + reserve`` pages an hour, and an incident far stronger than anything paged in the hour is never
silenced by a spent budget until the reserve is spent too. Spending the reserve takes escalations that each
double the strongest page so far; priority grows about linearly with an incident's alerts, so the attacker's
last burst must be about 2^reserve times the first: at that size it is the attack an analyst should see.

Partitions (issue 32). The service runs as a group on the alert topic's partitions, each with a book of its
own; the budget is split between them (``Budget.share_of``): partition p pages at most its share of the
budget and of the reserve, and the shares sum to the whole. The guarantee stays ``per_hour + reserve`` pages an
hour in all, exactly, however many instances run and however partitions move between them, because a share's
trailing hour is part of its partition's state. What it gives up: a quiet partition's unused pages are not lent
to a busy one, and the line is drawn among a partition's own incidents.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable
from typing import Any

HOUR_MS = 3_600_000
PAGE, REVIEW = "page", "review"
RECOMPUTE_EVERY = 256  # filed alerts
ESCALATE = 2.0  # a spent budget still pages an incident this many times stronger than the hour's strongest page


def _last(items: list[Any], n: int) -> list[Any]:
    """The last ``n`` items (none for n = 0, where ``items[-0:]`` would be all of them)."""
    return items[max(0, len(items) - n):]


def share(total: int, part: int, parts: int) -> int:
    """Part ``part``'s whole share of ``total`` split over ``parts``: the shares sum to ``total`` exactly (the
    first ``total % parts`` parts take one more)."""
    return total // parts + (1 if part < total % parts else 0)


@dataclasses.dataclass
class Budget:
    per_hour: int
    floor: float
    line: float = 0.0
    pages: list[int] = dataclasses.field(default_factory=list)  # event times of the trailing hour's pages
    strengths: list[float] = dataclasses.field(default_factory=list)  # their priorities when paged
    escalations: list[int] = dataclasses.field(default_factory=list)  # event times of reserve pages
    minute: int = -1
    filed: int = 0
    reserve_per_hour: int | None = None  # a partition's share of the reserve (``share``); None: a fifth, at least 1

    def __post_init__(self) -> None:
        self.line = max(self.line, self.floor)

    @classmethod
    def share_of(cls, per_hour: int, floor: float, partition: int, partitions: int) -> Budget:
        """The budget of one alert partition when the service runs on ``partitions`` of them (issue 32): its
        share of the pages and of the reserve, so that the shares add up to exactly the whole budget's, whichever
        instance owns which partitions (each share and its trailing hour move with the partition's state)."""
        return cls(share(per_hour, partition, partitions), floor,
                   reserve_per_hour=share(max(1, per_hour // 5), partition, partitions))

    @property
    def reserve(self) -> int:
        return self.reserve_per_hour if self.reserve_per_hour is not None else max(1, self.per_hour // 5)

    def pages_in_hour(self, now_ms: int) -> int:
        kept = [(t, p) for t, p in zip(self.pages, self._aligned(), strict=True) if t > now_ms - HOUR_MS]
        self.pages, self.strengths = [t for t, _ in kept], [p for _, p in kept]
        self.escalations = [t for t in self.escalations if t > now_ms - HOUR_MS]
        return len(self.pages) - len(self.escalations)

    def _aligned(self) -> list[float]:
        return (self.strengths + [0.0] * len(self.pages))[: len(self.pages)]

    def due(self, now_ms: int) -> bool:
        """Whether the line is due for recomputation after one more filed alert at ``now_ms``."""
        self.filed += 1
        minute = now_ms // 60_000
        if minute != self.minute or self.filed % RECOMPUTE_EVERY == 0:
            self.minute = max(self.minute, minute)
            return True
        return False

    def recompute(self, priorities: Iterable[float]) -> float:
        """The N-th best priority of the trailing hour's incidents, never below the floor."""
        best = heapq.nlargest(self.per_hour, priorities)
        self.line = max(self.floor, best[-1] if best and len(best) >= self.per_hour else self.floor)
        return self.line

    def decide(self, priority: float, now_ms: int) -> tuple[str, str]:
        """Page or review an incident not paged yet; the reason says which side of the line and why."""
        if priority < self.line:
            return REVIEW, f"priority {priority:.1f} below the page line {self.line:.1f}"
        used = self.pages_in_hour(now_ms)
        if used >= self.per_hour:
            strongest = max(self.strengths, default=0.0)
            if priority >= ESCALATE * strongest and len(self.escalations) < self.reserve:
                self.pages.append(now_ms)
                self.strengths.append(priority)
                self.escalations.append(now_ms)
                return PAGE, (f"escalated: priority {priority:.1f} is at least {ESCALATE:g}x the strongest page of "
                              f"the last hour ({strongest:.1f}) though the budget of {self.per_hour} is spent; "
                              f"reserve page {len(self.escalations)} of {self.reserve}")
            return REVIEW, (f"priority {priority:.1f} reached the page line {self.line:.1f}, but the budget of "
                            f"{self.per_hour} pages per hour is spent ({used} in the last hour) and it is not "
                            f"{ESCALATE:g}x the strongest page ({strongest:.1f}) or the reserve is spent")
        self.pages.append(now_ms)
        self.strengths.append(priority)
        return PAGE, (f"priority {priority:.1f} reached the page line {self.line:.1f}; page {used + 1} of "
                      f"{self.per_hour} in the last hour")

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "pages": self.pages, "strengths": self._aligned(),
                "escalations": self.escalations, "minute": self.minute, "filed": self.filed}

    def restore(self, raw: dict[str, Any]) -> None:
        """From the state record; raises ValueError/KeyError/TypeError on another shape (nothing is changed then)."""
        line = float(raw["line"])
        pages, minute, filed = raw["pages"], raw["minute"], raw["filed"]
        numbers = [*pages, minute, filed] if isinstance(pages, list) else None
        if numbers is None or not math.isfinite(line) or not all(
                isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 for v in numbers):
            raise ValueError("a budget record holds a finite line and integer pages, minute and filed")
        strengths, escalations = raw.get("strengths", []), raw.get("escalations", [])
        if not isinstance(strengths, list) or not isinstance(escalations, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in strengths) \
                or not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) < 2**63 for v in escalations):
            raise ValueError("a budget record's strengths are finite numbers and its escalations integers")
        keep = self.per_hour + self.reserve
        self.line = max(self.floor, line)
        self.pages = _last([int(t) for t in pages], keep)
        self.strengths = _last(([float(p) for p in strengths] + [0.0] * len(pages))[: len(pages)], keep)
        self.escalations = _last([int(t) for t in escalations], self.reserve)
        self.minute, self.filed = int(minute), int(filed)
