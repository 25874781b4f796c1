"""gateway.store: pending jobs and their counters, a bounded memory of final ones, redelivery and waiting."""

from __future__ import annotations

import asyncio

from common.wire import JobState, Status
from gateway.store import JobRecord, JobStore


def record(job_id: str, rows: int = 10, frame_bytes: int = 100, sent_at: float = 0.0) -> JobRecord:
    return JobRecord(job_id, "rides", rows, 1_700_000_000.0, frame=b"x" * frame_bytes, sent_at=sent_at)


def committed(job_id: str, rows: int = 10) -> Status:
    return Status(job_id, JobState.COMMITTED, rows, 1_700_000_001.5)


def test_add_counts_pending_rows_and_bytes() -> None:
    store = JobStore(capacity=10)
    store.add(record("a", rows=10, frame_bytes=100))
    store.add(record("b", rows=5, frame_bytes=40))
    assert set(store.pending) == {"a", "b"}
    assert (store.pending_rows, store.pending_bytes) == (15, 140)
    rec = store.get("a")
    assert rec is not None and rec.state is JobState.ACCEPTED and not rec.state.final


def test_resolve_moves_pending_to_final_and_releases_counters() -> None:
    store = JobStore(capacity=10)
    store.add(record("a", rows=10, frame_bytes=100))
    store.add(record("b", rows=5, frame_bytes=40))
    assert store.resolve(committed("a")) is True
    assert set(store.pending) == {"b"}
    assert list(store.final) == ["a"]
    assert (store.pending_rows, store.pending_bytes) == (5, 40)
    rec = store.get("a")
    assert rec is not None
    assert rec.state is JobState.COMMITTED
    assert rec.committed_at == 1_700_000_001.5
    assert rec.error is None
    assert rec.frame is None  # the frame is not kept once final
    assert store.resolve(Status("b", JobState.FAILED, 5, 1_700_000_002.0, "23505: duplicate key")) is True
    b = store.get("b")
    assert b is not None and b.state is JobState.FAILED and b.error == "23505: duplicate key"
    assert (store.pending_rows, store.pending_bytes) == (0, 0)
    assert not store.pending


def test_resolve_of_unknown_or_repeated_job_returns_false() -> None:
    store = JobStore(capacity=10)
    store.add(record("a"))
    assert store.resolve(committed("nobody")) is False
    assert store.resolve(committed("a")) is True
    assert store.resolve(Status("a", JobState.FAILED, 10, None, "late")) is False  # a repeat changes nothing
    a = store.get("a")
    assert a is not None and a.state is JobState.COMMITTED and a.error is None
    assert (store.pending_rows, store.pending_bytes) == (0, 0)
    assert store.get("nobody") is None


def test_final_capacity_evicts_the_oldest() -> None:
    store = JobStore(capacity=2)
    for name in "abcd":
        store.add(record(name))
    for name in "cabd":  # resolution order, not add order, decides age
        assert store.resolve(committed(name))
    assert list(store.final) == ["b", "d"]
    assert store.get("c") is None and store.get("a") is None
    assert store.get("b") is not None and store.get("d") is not None


def test_due_returns_pending_jobs_sent_before_a_time() -> None:
    store = JobStore(capacity=10)
    store.add(record("early", sent_at=10.0))
    store.add(record("edge", sent_at=20.0))
    store.add(record("late", sent_at=30.0))
    store.add(record("done", sent_at=5.0))
    store.resolve(committed("done"))
    assert {r.job_id for r in store.due(20.0)} == {"early"}  # strictly before
    assert {r.job_id for r in store.due(25.0)} == {"early", "edge"}
    assert store.due(0.0) == []
    assert {r.job_id for r in store.due(100.0)} == {"early", "edge", "late"}


def test_wait_final_returns_the_record_resolved_by_another_task() -> None:
    async def scenario() -> None:
        store = JobStore(capacity=10)
        store.add(record("a"))
        waiter = asyncio.create_task(store.wait_final("a", timeout=30.0))
        await asyncio.sleep(0)  # let the waiter start and register
        assert not waiter.done()

        async def sink_reports() -> None:
            assert store.resolve(committed("a"))

        await asyncio.create_task(sink_reports())
        rec = await asyncio.wait_for(waiter, 5.0)
        assert rec is not None
        assert rec.job_id == "a" and rec.state is JobState.COMMITTED
        assert rec is store.get("a")
        assert not store._waiters  # no waiter left behind

    asyncio.run(scenario())


def test_several_waiters_on_one_job_all_wake() -> None:
    async def scenario() -> None:
        store = JobStore(capacity=10)
        store.add(record("a"))
        waiters = [asyncio.create_task(store.wait_final("a", timeout=30.0)) for _ in range(3)]
        await asyncio.sleep(0)
        store.resolve(Status("a", JobState.FAILED, 10, 1.0, "boom"))
        results = await asyncio.wait_for(asyncio.gather(*waiters), 5.0)
        assert [r.state if r else None for r in results] == [JobState.FAILED] * 3
        assert not store._waiters

    asyncio.run(scenario())


def test_wait_final_times_out_with_none_and_the_job_stays_pending() -> None:
    async def scenario() -> None:
        store = JobStore(capacity=10)
        store.add(record("a", rows=7, frame_bytes=70))
        assert await store.wait_final("a", timeout=0.01) is None
        assert "a" in store.pending
        assert (store.pending_rows, store.pending_bytes) == (7, 70)
        assert not store._waiters  # the timed-out waiter was removed
        # The job can still be resolved and waited on afterwards.
        assert store.resolve(committed("a", rows=7))
        rec = await store.wait_final("a", timeout=0.01)
        assert rec is not None and rec.state is JobState.COMMITTED

    asyncio.run(scenario())


def test_wait_final_on_unknown_job_is_none_at_once() -> None:
    async def scenario() -> None:
        store = JobStore(capacity=10)
        # A long timeout: returning promptly proves it did not wait.
        assert await asyncio.wait_for(store.wait_final("nobody", timeout=300.0), 5.0) is None

    asyncio.run(scenario())
