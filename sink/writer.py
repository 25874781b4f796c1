"""Writes batches of jobs into PostgreSQL with COPY, one transaction per batch.

Each job's ledger row (``zingest.ledger``) is inserted in the same transaction
as its rows, ``ON CONFLICT DO NOTHING``: a job the ledger already holds is
skipped and answered from the ledger, so redelivery is always safe, also when
two sinks hold the same job at once (the second waits on the first's key, then
sees it committed).

Errors are sorted at the batch boundary:

* transient (:func:`is_transient`: connection lost, server shutting down or
  starting, deadlock, serialization failure, out of resources) ->
  :class:`TransientError`; the caller keeps the batch, reconnects with
  back-off and writes it again;
* anything else (bad value, constraint violation, unknown column, a program
  limit such as too many array dimensions, a value psycopg cannot adapt) is bad
  data: the batch is written again one job per transaction, so only the
  offending job fails and every other job commits. psycopg files some of these
  (class 54, 57014) under ``OperationalError`` too, so the class alone cannot
  decide: the SQLSTATE does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

import psycopg
from psycopg import sql

from common.schema import ensure_schema
from common.wire import Job, JobState, Status

log = logging.getLogger(__name__)

# ON CONFLICT without a target: a repeat of the job id or of the (table, Idempotency-Key) pair is skipped.
_INSERT_LEDGER = """
INSERT INTO zingest.ledger (job_id, table_name, state, rows, accepted_at, idempotency_key)
SELECT j, t, 'committed', r, to_timestamp(a), k
  FROM unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::text[]) AS u(j, t, r, a, k)
ON CONFLICT DO NOTHING
RETURNING job_id, extract(epoch FROM committed_at)::float8
"""

_SELECT_LEDGER = """
SELECT job_id, state, rows, extract(epoch FROM committed_at)::float8, error
  FROM zingest.ledger WHERE job_id = ANY(%s::text[])
"""

_SELECT_LEDGER_BY_KEY = """
SELECT job_id, state, extract(epoch FROM committed_at)::float8, error
  FROM zingest.ledger WHERE table_name = %s AND idempotency_key = %s
"""

_INSERT_FAILED = """
INSERT INTO zingest.ledger (job_id, table_name, state, rows, accepted_at, idempotency_key, error)
VALUES (%s, %s, 'failed', %s, to_timestamp(%s), %s, %s)
ON CONFLICT DO NOTHING
"""


class TransientError(Exception):
    """The database could not be reached or asked us to retry; the batch is intact."""


@dataclass
class WriteResult:
    statuses: list[Status]
    rows_written: int
    duplicates: int


# SQLSTATEs worth retrying: the same batch can succeed later, untouched.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03"})
TRANSIENT_CLASSES = frozenset({"08", "53"})  # connection exceptions, insufficient resources

# Errors that mean "this data cannot be written", besides PostgreSQL's own.
# RecursionError: psycopg adapts nested lists recursively; a deep enough value exhausts the stack.
BAD_DATA_ERRORS = (psycopg.Error, RecursionError)


def is_transient(exc: BaseException, conn: psycopg.Connection | None = None) -> bool:
    if not isinstance(exc, psycopg.Error):
        return False
    if conn is not None and (conn.closed or conn.broken):
        return True
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)  # lost connection: no server answer at all
    return state in TRANSIENT_SQLSTATES or state[:2] in TRANSIENT_CLASSES


def qualified(table: str) -> sql.Identifier:
    """Tables live in schema public; a dot in the name is part of the name, never a schema."""
    return sql.Identifier("public", table)


def copy_statement(table: str, columns: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        qualified(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def describe(exc: BaseException) -> str:
    if not isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__}: {exc}"
    diag = exc.diag
    text = (diag.message_primary or str(exc)).strip()
    if diag.message_detail:
        text += f" ({diag.message_detail.strip()})"
    if diag.context and "COPY" in diag.context:
        text += f" [{diag.context.strip().splitlines()[0]}]"
    return f"{exc.sqlstate or 'error'}: {text}"


def recorded_fates(cur: psycopg.Cursor, jobs: list[Job]) -> list[Status]:
    """Statuses of jobs the ledger already holds, by job id or else by (table, Idempotency-Key)."""
    if not jobs:
        return []
    cur.execute(_SELECT_LEDGER, ([j.job_id for j in jobs],))
    found = {row[0]: Status(row[0], JobState(row[1]), row[2], row[3], row[4]) for row in cur.fetchall()}
    statuses = []
    for job in jobs:
        if job.job_id in found:
            statuses.append(found[job.job_id])
            continue
        # Not this id: another job with the same key landed first (a retry accepted by another gateway).
        cur.execute(_SELECT_LEDGER_BY_KEY, (job.table, job.idempotency_key))
        first_id, state, committed_at, error = cur.fetchone()
        note = f"duplicate of job {first_id} (same Idempotency-Key); its rows were not written again"
        statuses.append(Status(job.job_id, JobState(state), job.row_count, committed_at, error or note))
    return statuses


class PgWriter:
    """Owns one connection; ``write`` lands a batch and returns one status per job."""

    def __init__(self, dsn: str, application_name: str = "zingest-sink") -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._conn: psycopg.Connection | None = None

    def connect(self) -> None:
        try:
            self._conn = psycopg.connect(self._dsn, application_name=self._application_name, autocommit=True)
            ensure_schema(self._conn)
        except psycopg.Error as exc:
            if not is_transient(exc, self._conn):
                raise
            self._transient(exc)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    def write(self, jobs: list[Job]) -> WriteResult:
        # A redelivered job can share a batch with its first copy; the ledger insert would
        # accept the id once but the COPY would land its rows once per copy. Keep one.
        jobs = list({job.job_id: job for job in jobs}.values())
        if not self.connected:
            self.connect()
        assert self._conn is not None
        conn = self._conn
        try:
            return self._write_together(conn, jobs)
        except BAD_DATA_ERRORS as exc:
            if is_transient(exc, conn):
                self._transient(exc)
            if len(jobs) == 1:
                return self._fail_or_retry(conn, jobs[0], exc)
            log.info("batch of %d jobs rejected (%s); writing them one by one", len(jobs), describe(exc))
        statuses, written, dups = [], 0, 0
        for job in jobs:
            try:
                res = self._write_together(conn, [job])
            except BAD_DATA_ERRORS as exc:
                res = self._fail_or_retry(conn, job, exc)
            statuses += res.statuses
            written += res.rows_written
            dups += res.duplicates
        return WriteResult(statuses, written, dups)

    def _transient(self, exc: BaseException) -> None:
        self.close()
        raise TransientError(describe(exc)) from exc

    def _fail_or_retry(self, conn: psycopg.Connection, job: Job, exc: BaseException) -> WriteResult:
        if is_transient(exc, conn):
            self._transient(exc)
        try:
            return self._fail(conn, job, exc)
        except psycopg.Error as record_exc:
            self._transient(record_exc)  # could not even record the failure: try the batch again later
            raise  # unreachable: _transient always raises

    def _write_together(self, conn: psycopg.Connection, jobs: list[Job]) -> WriteResult:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                _INSERT_LEDGER,
                (
                    [j.job_id for j in jobs],
                    [j.table for j in jobs],
                    [j.row_count for j in jobs],
                    [j.accepted_at for j in jobs],
                    [j.idempotency_key for j in jobs],
                ),
            )
            fresh = dict(cur.fetchall())
            # Rows of every new job, grouped so that one COPY lands each (table, columns) pair.
            copies: dict[tuple[str, tuple[str, ...]], list[list]] = defaultdict(list)
            for job in jobs:
                if job.job_id in fresh:
                    for group in job.groups:
                        copies[(job.table, group.columns)].extend(group.rows)
            written = 0
            for (table, columns), rows in copies.items():
                with cur.copy(copy_statement(table, columns)) as copy:
                    for row in rows:
                        copy.write_row(row)
                written += len(rows)
            statuses = [
                Status(j.job_id, JobState.COMMITTED, j.row_count, fresh[j.job_id]) for j in jobs if j.job_id in fresh
            ]
            seen = [j for j in jobs if j.job_id not in fresh]
            statuses += recorded_fates(cur, seen)
        return WriteResult(statuses, written, len(seen))

    def _fail(self, conn: psycopg.Connection, job: Job, exc: BaseException) -> WriteResult:
        """Record the job as failed in the ledger, unless it already has a fate there, and report that."""
        error = describe(exc)
        log.warning("job %s into %s failed: %s", job.job_id, job.table, error)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                _INSERT_FAILED, (job.job_id, job.table, job.row_count, job.accepted_at, job.idempotency_key, error)
            )
            return WriteResult(recorded_fates(cur, [job]), 0, 0)
