"""The one PostgreSQL every system writes to: start it, reset the bench table, check what landed.

By default an embedded server (``zingest.embedded``) in the work folder; with
``ZINGEST_BENCH_DSN`` set, that server instead. Its own CPU is measured from
the postmaster process and all its backends (:class:`benchmarks.procs.TreeCpu`),
when the server runs on this machine and can be seen.

Waiting for rows polls ``count(*)``, a full scan: the poll runs without parallel
workers and waits four times as long as the last scan took, so the benchmark
never takes more than a fifth of a core from the system it is measuring.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks.data import TABLE, rides_ddl, table_ddl
from benchmarks.procs import TreeCpu
from common.schema import ensure_schema
from zingest.embedded import EmbeddedPostgres

DSN_ENV = "ZINGEST_BENCH_DSN"
# PostgreSQL settings recorded with the results: they decide what a commit costs.
SETTINGS = ("server_version", "fsync", "synchronous_commit", "wal_level", "shared_buffers", "max_wal_size",
            "full_page_writes", "checkpoint_timeout")
# Shortest pause between two count(*) polls (seconds), and the pause as a multiple of the last scan's time.
COUNT_POLL_S = 0.05
COUNT_POLL_FACTOR = 4.0


@dataclass
class Landed:
    """What the bench table holds after a run, against what the clients were told was accepted."""

    expected_rows: int
    rows: int
    distinct_ids: int
    id_sum: int
    expected_id_sum: int
    first_sent: float | None  # Unix seconds
    last_landed: float | None

    @property
    def ok(self) -> bool:
        return (self.rows == self.expected_rows == self.distinct_ids and self.id_sum == self.expected_id_sum)

    def problem(self) -> str | None:
        if self.ok:
            return None
        if self.rows < self.expected_rows:
            return f"lost rows: {self.rows} of {self.expected_rows} landed"
        if self.rows != self.distinct_ids:
            return f"duplicated rows: {self.rows - self.distinct_ids} ids landed more than once"
        if self.rows > self.expected_rows:
            return f"extra rows: {self.rows} landed, {self.expected_rows} accepted"
        return "rows landed that were never acknowledged (id checksum differs)"

    @property
    def commit_seconds(self) -> float | None:
        """From the first row sent to the last row written: the span the rows/s figure divides by."""
        if self.first_sent is None or self.last_landed is None:
            return None
        return self.last_landed - self.first_sent


class Database:
    def __init__(self, work: Path) -> None:
        self.external = os.environ.get(DSN_ENV, "")
        self._embedded: EmbeddedPostgres | None = None
        self._work = work
        self.dsn = self.external
        self.cpu: TreeCpu | None = None  # the server's processes, when they can be seen

    @property
    def kind(self) -> str:
        return "server named by ZINGEST_BENCH_DSN" if self.external else "embedded (zingest.embedded)"

    def start(self) -> None:
        if not self.external:
            self._embedded = EmbeddedPostgres(self._work / "pg")
            self.dsn = self._embedded.start()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            ensure_schema(conn)
            conn.execute(rides_ddl())
            conn.execute(table_ddl())
            # Looked up while this backend lives: its parent is the postmaster.
            postmaster = _postmaster(_row(conn, "SELECT pg_backend_pid()")[0])
        self.cpu = None if postmaster is None else TreeCpu(postmaster)

    def stop(self) -> None:
        if self.external and self.dsn:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS public.{TABLE}")
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.dsn) as conn:
            return {name: str(_row(conn, f"SHOW {name}")[0]) for name in SETTINGS}

    def reset(self) -> None:
        """Empty the bench table and zingest's ledger, and checkpoint, so each run starts alike."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE public.{TABLE}")
            conn.execute("TRUNCATE zingest.ledger, zingest.dead_letters")
            try:
                conn.execute("CHECKPOINT")
            except psycopg.errors.InsufficientPrivilege:
                pass  # not a superuser on an external server: runs start with whatever WAL is pending

    def wait_landed(self, expected: int, timeout: float, progress: Callable[[int], None] | None = None) -> int:
        """Poll count(*) until ``expected`` rows are there, or nothing new landed for ``timeout`` seconds."""
        last, last_change = -1, time.monotonic()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET max_parallel_workers_per_gather = 0")
            while True:
                started = time.monotonic()
                n = int(_row(conn, f"SELECT count(*) FROM public.{TABLE}")[0])
                took = time.monotonic() - started
                if progress is not None:
                    progress(n)
                if n != last:
                    last, last_change = n, time.monotonic()
                if n >= expected or time.monotonic() - last_change > timeout:
                    return n
                time.sleep(max(COUNT_POLL_S, COUNT_POLL_FACTOR * took))

    def landed(self, expected_rows: int, expected_id_sum: int) -> Landed:
        with psycopg.connect(self.dsn) as conn:
            rows, distinct, total, first, last = _row(
                conn, f"SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0),"
                f" extract(epoch FROM min(sent_at))::float8, extract(epoch FROM max(landed_at))::float8"
                f" FROM public.{TABLE}")
        return Landed(expected_rows, rows, distinct, int(total), expected_id_sum, first, last)

    def commit_latency(self) -> dict[str, float]:
        """p50, p99 and max of landed_at - sent_at over every row in the table, in milliseconds."""
        with psycopg.connect(self.dsn) as conn:
            p50, p99, top = _row(
                conn, "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP"
                " (ORDER BY d), max(d) FROM (SELECT extract(epoch FROM landed_at - sent_at)::float8 * 1000 AS d"
                f" FROM public.{TABLE}) AS t")
        return {"p50_ms": p50, "p99_ms": p99, "max_ms": top}


def _row(conn: psycopg.Connection[Any], query: str) -> tuple[Any, ...]:
    """The one row ``query`` answers (an aggregate or SHOW always answers one)."""
    row = conn.execute(query).fetchone()
    assert row is not None, query
    return tuple(row)


def _postmaster(backend_pid: int) -> psutil.Process | None:
    """The postmaster of our backend, if the server runs here and we may look at it."""
    try:
        parent = psutil.Process(backend_pid).parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if parent is None or "postgres" not in parent.name():
        return None
    return parent
