"""The gateway's job store: every accepted job until it is final, then a bounded memory of final ones.

Pending jobs keep their encoded frame so they can be sent again when no final
status arrives in time (redelivery); their rows and bytes are counted so
``gateway`` can refuse new work (503) before memory grows without bound.
Final jobs are kept newest-last up to ``status_capacity``; older ones are
answered from the ledger table by the caller. Idempotency-Keys map to the job
they created for ``idempotency_ttl_s`` (and at most ``status_capacity`` keys);
past that the ledger's unique (table, key) index still keeps a retry from
landing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field

from common.wire import JobState, RowError, Status


@dataclass(slots=True)
class JobRecord:
    job_id: str
    table: str
    rows: int
    accepted_at: float
    state: JobState = JobState.ACCEPTED
    committed_at: float | None = None
    error: str | None = None
    rows_committed: int = 0
    rows_rejected: int = 0
    errors: tuple[RowError, ...] = ()
    frame: bytes | None = field(default=None, repr=False)
    sent_at: float = 0.0
    attempts: int = 1


class JobStore:
    def __init__(self, capacity: int, key_ttl_s: float = 86_400.0) -> None:
        self.capacity = capacity
        self.key_ttl_s = key_ttl_s
        # (table, Idempotency-Key) -> (job id, monotonic expiry), oldest first
        self._keys: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self.pending: dict[str, JobRecord] = {}
        self.final: OrderedDict[str, JobRecord] = OrderedDict()
        self.pending_rows = 0
        self.pending_bytes = 0
        self._waiters: dict[str, list[asyncio.Future[JobRecord]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, rec: JobRecord) -> None:
        assert rec.frame is not None
        self.pending[rec.job_id] = rec
        self.pending_rows += rec.rows
        self.pending_bytes += len(rec.frame)
        self._idle.clear()

    def remember_key(self, table: str, key: str, job_id: str) -> None:
        self._keys[(table, key)] = (job_id, time.monotonic() + self.key_ttl_s)
        self._keys.move_to_end((table, key))
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def forget_key(self, table: str, key: str) -> None:
        self._keys.pop((table, key), None)

    def job_for_key(self, table: str, key: str) -> str | None:
        """The job id a live Idempotency-Key created, if this gateway still remembers it."""
        now = time.monotonic()
        while self._keys:
            oldest, (_, expires) = next(iter(self._keys.items()))
            if expires > now:
                break
            del self._keys[oldest]
        entry = self._keys.get((table, key))
        return entry[0] if entry else None

    def get(self, job_id: str) -> JobRecord | None:
        return self.pending.get(job_id) or self.final.get(job_id)

    def resolve(self, status: Status) -> bool:
        """Apply a final status; False if the job is not pending here (another gateway's, or a repeat)."""
        rec = self.pending.pop(job_id := status.job_id, None)
        if rec is None:
            return False
        assert rec.frame is not None
        self.pending_rows -= rec.rows
        self.pending_bytes -= len(rec.frame)
        rec.frame = None
        if not self.pending:
            self._idle.set()
        rec.state, rec.committed_at, rec.error = status.state, status.committed_at, status.error
        rec.rows_committed, rec.rows_rejected, rec.errors = status.rows_committed, status.rows_rejected, status.errors
        self.final[job_id] = rec
        while len(self.final) > self.capacity:
            self.final.popitem(last=False)
        for fut in self._waiters.pop(job_id, ()):
            if not fut.done():
                fut.set_result(rec)
        return True

    def due(self, older_than: float) -> list[JobRecord]:
        """Pending jobs last sent before ``older_than`` (a monotonic time)."""
        return [rec for rec in self.pending.values() if rec.sent_at < older_than]

    async def wait_idle(self) -> None:
        """Return once no job is pending."""
        await self._idle.wait()

    async def wait_final(self, job_id: str, timeout: float) -> JobRecord | None:
        """The job once final, or None after ``timeout`` seconds (the job stays tracked)."""
        rec = self.get(job_id)
        if rec is None or rec.state.final:
            return rec
        fut: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(job_id)
            if waiters and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[job_id]


class KeyLocks:
    """One asyncio lock per key, alive only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
