"""sink.batcher: batches close at max_rows or at linger, driven by a hand-advanced clock (no sleeps)."""

from __future__ import annotations

import itertools

from common.wire import Group, Job
from sink.batcher import Batcher

_ids = itertools.count()


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def job(rows: int) -> Job:
    return Job(f"job-{next(_ids)}", "rides", 0.0, (Group(("id",), [[i] for i in range(rows)]),))


def test_empty_batcher_is_not_ready_and_has_no_deadline() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=10, linger_s=0.5, clock=clock)
    assert len(b) == 0 and b.rows == 0
    assert not b.ready()
    assert not b.full()
    assert b.time_left() is None
    clock.advance(3600)
    assert not b.ready()
    assert b.time_left() is None
    assert b.take() == []


def test_closes_at_max_rows_without_time_passing() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=10, linger_s=0.5, clock=clock)
    b.add(job(4))
    b.add(job(5))
    assert b.rows == 9 and len(b) == 2
    assert not b.full() and not b.ready()
    b.add(job(1))
    assert b.rows == 10
    assert b.full() and b.ready()
    assert b.time_left() == 0.5  # closed by size, not by time


def test_closes_at_linger_counted_from_the_first_job() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=1000, linger_s=0.5, clock=clock)
    b.add(job(1))
    clock.advance(0.25)
    b.add(job(1))  # a later job does not extend the deadline
    clock.advance(0.125)
    assert not b.ready()
    assert b.time_left() == 0.125
    clock.advance(0.125)
    assert b.time_left() == 0.0
    assert b.ready()
    clock.advance(10)
    assert b.time_left() == 0.0  # never negative
    assert b.ready()


def test_time_left_decreases_as_the_clock_moves() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=1000, linger_s=1.0, clock=clock)
    b.add(job(3))
    seen = []
    for _ in range(5):
        seen.append(b.time_left())
        clock.advance(0.25)
    assert seen == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert b.ready()


def test_zero_linger_is_ready_at_once() -> None:
    b = Batcher(max_rows=1000, linger_s=0.0, clock=FakeClock())
    b.add(job(1))
    assert b.time_left() == 0.0
    assert b.ready()


def test_a_job_bigger_than_max_rows_is_one_whole_batch() -> None:
    b = Batcher(max_rows=10, linger_s=0.5, clock=FakeClock())
    big = job(25)
    b.add(big)
    assert b.ready() and b.full()
    assert b.rows == 25
    batch = b.take()
    assert batch == [big]
    assert batch[0].row_count == 25  # not split


def test_take_returns_jobs_in_order_and_resets() -> None:
    clock = FakeClock()
    b = Batcher(max_rows=10, linger_s=0.5, clock=clock)
    jobs = [job(4), job(3), job(3)]
    for j in jobs:
        b.add(j)
    clock.advance(2.0)
    assert b.ready()
    assert b.take() == jobs
    assert len(b) == 0 and b.rows == 0
    assert not b.ready() and not b.full()
    assert b.time_left() is None
    assert b.take() == []
    # The next batch's linger starts at its own first job, not at the old batch's.
    clock.advance(5.0)
    b.add(job(2))
    assert b.time_left() == 0.5
    assert not b.ready()
    assert b.rows == 2
