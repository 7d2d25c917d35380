"""The pacer on a fake clock: never ahead of schedule, no catch-up bursts after a stall."""

from __future__ import annotations

from producer.pacing import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 1e-6)


def test_never_ahead_of_schedule() -> None:
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock, sleep=clock.sleep)
    sent = 0
    while clock.t < 2.0:
        sent += pacer.allowance()
        assert sent <= clock.t * 1000 + 1
        clock.t += 0.0003  # the work of sending
    assert 1990 <= sent <= 2001


def test_stall_does_not_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(1000, clock=clock, sleep=clock.sleep, max_lag_s=0.1)
    pacer.allowance()
    clock.t += 5.0  # a five-second stall (GC, slow broker)
    assert pacer.allowance() <= 100 + 1


def test_unlimited_rate_hands_out_batches() -> None:
    assert Pacer(0).allowance() > 1


def test_a_rate_below_ten_per_second_is_kept() -> None:
    """One record due is on time, not late: at 7/s one record's interval (0.14 s) exceeds ``max_lag_s`` (0.1 s),
    which used to restart the schedule on every record and send as fast as possible."""
    now = [0.0]
    pacer = Pacer(7, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    sent = 0
    while now[0] < 10.0:
        sent += pacer.allowance()
    assert 69 <= sent <= 72
