"""Smooth pacing: record i is due at ``start + i / rate``; never send ahead of schedule.

Sleeping per record is too coarse at thousands per second, so the loop asks how many records are due
now, sends exactly those, and sleeps until the next one is due. Falling behind (a slow broker) does not
cause a catch-up burst: the schedule restarts from now when it lags by more than ``max_lag_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    def __init__(self, rate: float, *, max_lag_s: float = 0.1, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate < 0:
            raise ValueError(f"--rate must be >= 0 records/s (0 = as fast as possible), got {rate}")
        self.rate = rate
        self.max_lag_s = max_lag_s
        self._clock = clock
        self._sleep = sleep
        self._start = clock()
        self._issued = 0

    def restart(self) -> None:
        self._start = self._clock()
        self._issued = 0

    def allowance(self) -> int:
        """How many records may be sent now; blocks until at least one is due. Unlimited rate: a large batch."""
        if self.rate == 0:
            return 10_000
        while True:
            now = self._clock()
            due = int((now - self._start) * self.rate) + 1 - self._issued
            if due > 0:
                # how far behind: the record due now is on time (counting it made any rate below 10/s "late" by
                # more than max_lag_s on every record, restarting the schedule each time: no pacing at all)
                lag = (due - 1) / self.rate
                if lag > self.max_lag_s:  # we fell behind: restart the schedule instead of bursting
                    self._start = now - 1.0 / self.rate
                    self._issued = 0
                    due = 1
                self._issued += due
                return due
            self._sleep(min((self._issued - (now - self._start) * self.rate) / self.rate, 0.01))
