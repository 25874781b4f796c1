"""The gateway's own use of PostgreSQL: the table catalog and ledger look-ups.

The gateway never writes rows (sinks do). It reads which tables may be written
and their columns at start, again when a request names a table it does not
know (at most once per ``REFRESH_MIN_S``), and asks the ledger for jobs that
are no longer in its memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

import psycopg

from common.schema import ensure_schema
from common.wire import JobState, RowError
from gateway.catalog import Column, Table
from gateway.store import JobRecord

log = logging.getLogger(__name__)

# Longest the gateway waits on the database for one look-up, connecting included (seconds): a server
# that accepts connections and never answers must cost a request a 503, not hang it (and what it holds).
QUERY_TIMEOUT_S = 5.0

# A request for an unknown table re-reads the catalog at most this often (seconds).
REFRESH_MIN_S = 1.0

# A column of a domain type is checked as the domain's base type (its own constraints are PostgreSQL's).
_CATALOG = """
SELECT c.relname, a.attname,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            ELSE format_type(a.atttypid, a.atttypmod) END,
       NOT a.attnotnull AND NOT (t.typtype = 'd' AND t.typnotnull),
       a.atthasdef OR (t.typtype = 'd' AND t.typdefault IS NOT NULL), a.attidentity <> '', a.attgenerated <> '',
       a.attidentity = 'a'
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
 ORDER BY c.relname, a.attnum
"""

_LEDGER_COLUMNS = """
SELECT job_id, table_name, state, rows, extract(epoch FROM accepted_at)::float8,
       extract(epoch FROM committed_at)::float8, error,
       coalesce(rows_committed, CASE WHEN state = 'committed' THEN rows ELSE 0 END), rows_rejected, errors
  FROM zingest.ledger"""
_LEDGER = _LEDGER_COLUMNS + " WHERE job_id = %s"
_LEDGER_BY_KEY = _LEDGER_COLUMNS + " WHERE table_name = %s AND idempotency_key = %s"
_KNOWN = "SELECT job_id FROM zingest.ledger WHERE job_id = ANY(%s::text[])"


class Database:
    def __init__(self, dsn: str, allowed: tuple[str, ...]) -> None:
        self._dsn = dsn
        self._allowed = frozenset(allowed)
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()
        self._refreshed_at = 0.0
        # One catalog read at a time: requests that find it stale together share the read.
        self._refreshing = asyncio.Lock()
        self._stuck: set[asyncio.Task[list[tuple]]] = set()
        self._silent_until = 0.0  # after a look-up timed out: until then, fail without asking
        self.tables: dict[str, Table] = {}

    async def open(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            ensure_schema(conn)
        await self.refresh()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, application_name="zingest-gateway",
                # So that a connect abandoned at QUERY_TIMEOUT_S (see _fetch) also ends by itself.
                connect_timeout=max(2, int(QUERY_TIMEOUT_S)),
            )
        return self._conn

    async def _fetch(self, query: str, params: tuple = ()) -> list[tuple]:
        async with self._lock:
            # Look-ups take turns on one connection: after one timed out, those queued behind it (and
            # any for QUERY_TIMEOUT_S after) fail at once instead of each waiting out a timeout of its own.
            if time.monotonic() < self._silent_until:
                raise psycopg.OperationalError("the database did not answer a moment ago")
            # Not asyncio.timeout: cancelling psycopg mid-query starts its own cancel protocol, which
            # against a server that does not answer takes 15 s more. The look-up runs as a task; past
            # the deadline its connection is shut down under it and a fresh one serves the next look-up.
            fetch = asyncio.get_running_loop().create_task(self._fetch_once_or_twice(query, params))
            done, _ = await asyncio.wait({fetch}, timeout=QUERY_TIMEOUT_S)
            if fetch in done:
                return fetch.result()
            self._abandon(fetch)
            self._silent_until = time.monotonic() + QUERY_TIMEOUT_S
            raise psycopg.OperationalError(f"the database did not answer within {QUERY_TIMEOUT_S:g} s")

    def _abandon(self, fetch: asyncio.Task[list[tuple]]) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _shut_down(conn)
        self._stuck.add(fetch)  # held until done: a task nobody references may be collected
        fetch.add_done_callback(self._stuck.discard)
        fetch.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is expected

    async def _fetch_once_or_twice(self, query: str, params: tuple) -> list[tuple]:
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
            except psycopg.OperationalError:
                # A connection the server dropped (restart, idle kill): one fresh try, then give up.
                if attempt == 2 or not conn.broken:
                    raise
        raise AssertionError("unreachable")

    async def refresh(self) -> None:
        columns: dict[str, dict[str, Column]] = {}
        for table, name, data_type, nullable, has_default, identity, generated, always in await self._fetch(_CATALOG):
            if self._allowed and table not in self._allowed:
                continue
            columns.setdefault(table, {})[name] = Column(name, data_type, nullable, has_default, identity, generated,
                                                         always)
        self.tables = {name: Table(name, cols) for name, cols in columns.items()}
        self._refreshed_at = time.monotonic()
        missing = self._allowed - self.tables.keys()
        if missing:
            log.warning("gateway.tables names tables that do not exist: %s", ", ".join(sorted(missing)))
        log.info("catalog: %d writable tables", len(self.tables))

    async def refresh_soon(self) -> bool:
        """Re-read the catalog unless it was read less than REFRESH_MIN_S ago; True if it was re-read
        (by this call, or by another one this call waited for)."""
        seen = self._refreshed_at
        if time.monotonic() - seen < REFRESH_MIN_S:
            return False
        async with self._refreshing:
            if self._refreshed_at != seen:
                return True  # read while we waited
            await self.refresh()
        return True

    async def table(self, name: str) -> Table | None:
        table = self.tables.get(name)
        if table is None and await self.refresh_soon():
            table = self.tables.get(name)
        return table

    async def ledger(self, job_id: str) -> JobRecord | None:
        return self._record(await self._fetch(_LEDGER, (job_id,)))

    async def ledger_by_key(self, table: str, key: str) -> JobRecord | None:
        return self._record(await self._fetch(_LEDGER_BY_KEY, (table, key)))

    async def recorded(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs the ledger already holds (committed or failed)."""
        return {row[0] for row in await self._fetch(_KNOWN, (job_ids,))}

    @staticmethod
    def _record(rows: list[tuple]) -> JobRecord | None:
        if not rows:
            return None
        job_id, table, state, n, accepted_at, committed_at, error, committed, rejected, errors = rows[0]
        row_errors = tuple(RowError(e["row"], e["column"], e["sqlstate"], e["message"]) for e in errors or ())
        return JobRecord(job_id, table, n, accepted_at, JobState(state), committed_at, error, committed, rejected,
                         row_errors)


def _shut_down(conn: psycopg.AsyncConnection) -> None:
    """End the connection's TCP stream under a look-up stuck on it: its read sees the end and fails
    (closing the socket itself would leave the event loop watching a file descriptor that is gone)."""
    try:
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error) as exc:
        log.debug("shutting down a stuck database connection: %s", exc)
