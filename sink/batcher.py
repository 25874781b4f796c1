"""Gathers jobs into batches: pure, with an injected clock, no sockets.

A batch closes when it holds ``max_rows`` rows or when ``linger_s`` seconds have
passed since its first job arrived, whichever comes first. A single job larger
than ``max_rows`` is never split: it becomes a batch of its own, so a job is
always committed whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from common.wire import Job


class Batcher:
    def __init__(self, max_rows: int, linger_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rows = max_rows
        self.linger_s = linger_s
        self._clock = clock
        self._jobs: list[Job] = []
        self._rows = 0
        self._opened_at = 0.0

    def __len__(self) -> int:
        return len(self._jobs)

    @property
    def rows(self) -> int:
        return self._rows

    def add(self, job: Job) -> None:
        if not self._jobs:
            self._opened_at = self._clock()
        self._jobs.append(job)
        self._rows += job.row_count

    def full(self) -> bool:
        return self._rows >= self.max_rows

    def ready(self) -> bool:
        """True when the batch should be written now."""
        return bool(self._jobs) and (self.full() or self.time_left() == 0.0)

    def time_left(self) -> float | None:
        """Seconds until the linger expires; None while the batch is empty."""
        if not self._jobs:
            return None
        return max(0.0, self._opened_at + self.linger_s - self._clock())

    def take(self) -> list[Job]:
        jobs, self._jobs, self._rows = self._jobs, [], 0
        return jobs
