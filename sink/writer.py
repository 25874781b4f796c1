"""Writes batches of jobs into PostgreSQL with COPY, one transaction per batch.

Each job's ledger row (``zingest.ledger``) is inserted in the same transaction
as its rows, ``ON CONFLICT DO NOTHING``: a job the ledger already holds is
skipped and answered from the ledger, so redelivery is always safe, also when
two sinks hold the same job at once (the second waits on the first's key, then
sees it committed).

Errors are sorted at the batch boundary:

* transient (:func:`is_transient`: connection lost, server shutting down or
  starting, deadlock, serialization failure, out of resources, a lock not
  granted in time, a statement canceled) -> :class:`TransientError`; the
  caller keeps the batch, reconnects with back-off and writes it again;
* anything else (bad value, constraint violation, a program limit such as too
  many array dimensions, a value psycopg cannot adapt) is bad data: each job
  is written again in a transaction of its own, the refused rows are found
  (sink.isolate) and kept in ``zingest.dead_letters`` with their reason, and
  every other row commits. The job reads ``partial`` or, if no row landed,
  ``failed``. psycopg files some bad data (class 54) under ``OperationalError``
  too, so the class alone cannot decide: the SQLSTATE does.

Storing a dead letter never fails because of what the row holds
(sink.deadletter), so no row can stop a sink or make a job come back forever.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import NoReturn

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from common.schema import ensure_schema
from common.wire import Job, JobState, RowError, Status
from sink.deadletter import DeadLetters
from sink.isolate import BAD_DATA_ERRORS, BadRow, copy_isolating, describe, error_text

log = logging.getLogger(__name__)

# ON CONFLICT without a target: a repeat of the job id or of the (table, Idempotency-Key) pair is skipped.
_INSERT_LEDGER = """
INSERT INTO zingest.ledger (job_id, table_name, state, rows, accepted_at, idempotency_key, rows_committed)
SELECT j, t, 'committed', r, to_timestamp(a), k, r
  FROM unnest(%s::text[], %s::text[], %s::int[], %s::float8[], %s::text[]) AS u(j, t, r, a, k)
ON CONFLICT DO NOTHING
RETURNING job_id, extract(epoch FROM committed_at)::float8
"""

_SELECT_LEDGER = """
SELECT job_id, state, rows, extract(epoch FROM committed_at)::float8, error,
       coalesce(rows_committed, CASE WHEN state = 'committed' THEN rows ELSE 0 END), rows_rejected, errors
  FROM zingest.ledger WHERE job_id = ANY(%s::text[])
"""

_FINISH_LEDGER = """
UPDATE zingest.ledger SET state = %s, rows_committed = %s, rows_rejected = %s, error = %s, errors = %s
 WHERE job_id = %s
"""

_SELECT_LEDGER_BY_KEY = """
SELECT job_id, state, extract(epoch FROM committed_at)::float8, error
  FROM zingest.ledger WHERE table_name = %s AND idempotency_key = %s
"""


class TransientError(Exception):
    """The database could not be reached or asked us to retry; the batch is intact."""


@dataclass
class WriteResult:
    statuses: list[Status]
    rows_written: int
    duplicates: int


# SQLSTATEs worth retrying: the same batch can succeed later, untouched. Not one of them says
# anything about a row, so none may send good rows to the dead-letter table:
#   40001 serialization_failure, 40P01 deadlock_detected;
#   55P03 lock_not_available (lock_timeout), 57014 query_canceled (statement_timeout, pg_cancel_backend;
#     a COPY psycopg ends for a Python error also reads 57014, but psycopg raises that Python error);
#   57P01/57P02/57P03 admin shutdown, crash shutdown, cannot connect now; 57P05 idle_session_timeout and
#   25P03 idle_in_transaction_session_timeout: the server ended the session;
#   25P02 in_failed_sql_transaction: every statement here runs in its own transaction or savepoint,
#     rolled back on any error, so this names a broken session, never a row: a fresh connection is the cure.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "57P05",
                                 "25P02", "25P03"})
TRANSIENT_CLASSES = frozenset({"08", "53"})  # connection exceptions, insufficient resources
QUERY_CANCELED = "57014"

# Refused rows reported in a job's status (all of them are in the dead-letter table).
MAX_ROW_ERRORS = 5


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


def recorded_fates(cur: psycopg.Cursor, jobs: list[Job]) -> list[Status]:
    """Statuses of jobs the ledger already holds, by job id or else by (table, Idempotency-Key)."""
    if not jobs:
        return []
    cur.execute(_SELECT_LEDGER, ([j.job_id for j in jobs],))
    found = {}
    for job_id, state, rows, committed_at, error, rows_committed, rows_rejected, errors in cur.fetchall():
        row_errors = tuple(RowError(e["row"], e["column"], e["sqlstate"], e["message"]) for e in errors or ())
        found[job_id] = Status(job_id, JobState(state), rows, committed_at, error, rows_committed, rows_rejected,
                               row_errors)
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
        self._statement_timeout: str | None = None  # as SHOW reads it, on the current connection
        self.cancels = 0  # statements canceled (57014), each one a batch kept and retried
        self.dead_letters = DeadLetters()

    def connect(self) -> None:
        try:
            self._conn = psycopg.connect(self._dsn, application_name=self._application_name, autocommit=True)
            # A timestamptz value sent without an offset means UTC, whatever the server's default is.
            self._conn.execute("SET TIME ZONE 'UTC'")
            # Read before anything that could be canceled, to say in the warning whether it is the cause.
            (self._statement_timeout,) = self._conn.execute("SHOW statement_timeout").fetchone()
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
            log.info("batch of %d jobs refused (%s); writing each job alone, setting refused rows aside",
                     len(jobs), describe(exc))
        results = []
        for job in jobs:
            try:
                results.append(self._write_isolating(conn, job))
            except BAD_DATA_ERRORS as exc:
                if is_transient(exc, conn):
                    self._transient(exc)
                # Isolation could not place the fault on a row: the job fails whole, every row kept.
                results.append(self._fail_whole(conn, job, exc))
        return WriteResult([s for r in results for s in r.statuses], sum(r.rows_written for r in results),
                           sum(r.duplicates for r in results))

    def _transient(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, psycopg.Error) and exc.sqlstate == QUERY_CANCELED:
            self._warn_canceled(exc)
        self.close()
        raise TransientError(describe(exc)) from exc

    def _warn_canceled(self, exc: psycopg.Error) -> None:
        self.cancels += 1
        timeout = self._statement_timeout
        if timeout is None or timeout == "0":
            log.warning("statement canceled (SQLSTATE 57014: %s), %d so far; the batch is kept and retried",
                        error_text(exc), self.cancels)
            return
        log.warning("statement canceled (SQLSTATE 57014: %s), %d so far; the batch is kept and retried. "
                    "statement_timeout is %s for this sink: if a batch's COPY takes longer than that, the sink "
                    "retries it forever; raise statement_timeout for the sink's role or database, or lower "
                    "sink.batch_rows", error_text(exc), self.cancels, timeout)

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
                Status(j.job_id, JobState.COMMITTED, j.row_count, fresh[j.job_id], rows_committed=j.row_count)
                for j in jobs if j.job_id in fresh
            ]
            seen = [j for j in jobs if j.job_id not in fresh]
            statuses += recorded_fates(cur, seen)
        return WriteResult(statuses, written, len(seen))

    def _write_isolating(self, conn: psycopg.Connection, job: Job) -> WriteResult:
        """One job in its own transaction: land every row PostgreSQL takes, dead-letter the others."""
        with conn.transaction(), conn.cursor() as cur:
            # Deferred constraints would only fail at COMMIT, past the savepoints: check them per COPY.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute(_INSERT_LEDGER, ([job.job_id], [job.table], [job.row_count], [job.accepted_at],
                                         [job.idempotency_key]))
            fresh = cur.fetchone()
            if fresh is None:
                return WriteResult(recorded_fates(cur, [job]), 0, 1)
            bad: list[BadRow] = []
            offset = 0
            for group in job.groups:
                bad += copy_isolating(conn, cur, copy_statement(job.table, group.columns), job.table, group, offset,
                                      is_transient)
                offset += len(group.rows)
            if not bad:
                status = Status(job.job_id, JobState.COMMITTED, job.row_count, fresh[1], rows_committed=job.row_count)
                return WriteResult([status], job.row_count, 0)
            bad.sort(key=lambda b: b.position)
            self.dead_letters.store(cur, job, bad)
            committed = job.row_count - len(bad)
            state = JobState.PARTIAL if committed else JobState.FAILED
            first = bad[0]
            error = (f"{len(bad)} of {job.row_count} rows refused; first: row {first.position}: "
                     f"{first.sqlstate or 'error'}: {first.message}")
            errors = tuple(RowError(b.position, b.column, b.sqlstate, b.message) for b in bad[:MAX_ROW_ERRORS])
            cur.execute(_FINISH_LEDGER, (state.value, committed, len(bad), error,
                                         Jsonb([_row_error(e) for e in errors], dumps=_dumps), job.job_id))
            log.warning("job %s into %s: %s", job.job_id, job.table, error)
            status = Status(job.job_id, state, job.row_count, fresh[1], error, committed, len(bad), errors)
            return WriteResult([status], committed, 0)

    def _fail_whole(self, conn: psycopg.Connection, job: Job, exc: BaseException) -> WriteResult:
        """Record the job failed, all its rows dead letters.

        Rows cannot make this fail (sink.deadletter keeps any row); a lost connection keeps the batch
        to retry; anything else is a bug: let it crash the sink.
        """
        try:
            return self._record_failed(conn, job, exc)
        except psycopg.Error as again:
            if is_transient(again, conn):
                self._transient(again)
            raise

    def _record_failed(self, conn: psycopg.Connection, job: Job, exc: BaseException) -> WriteResult:
        log.error("job %s into %s: no row could be placed: %s", job.job_id, job.table, describe(exc))
        state = getattr(exc, "sqlstate", None)
        bad, offset = [], 0
        for group in job.groups:
            bad += [BadRow(group.position(k, offset), group.columns, row, state, None, error_text(exc))
                    for k, row in enumerate(group.rows)]
            offset += len(group.rows)
        bad.sort(key=lambda b: b.position)
        error = f"{job.row_count} of {job.row_count} rows refused; {describe(exc)}"
        errors = tuple(RowError(b.position, None, state, b.message) for b in bad[:MAX_ROW_ERRORS])
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(_INSERT_LEDGER, ([job.job_id], [job.table], [job.row_count], [job.accepted_at],
                                         [job.idempotency_key]))
            fresh = cur.fetchone()
            if fresh is None:
                return WriteResult(recorded_fates(cur, [job]), 0, 1)
            self.dead_letters.store(cur, job, bad)
            cur.execute(_FINISH_LEDGER, (JobState.FAILED.value, 0, len(bad), error,
                                         Jsonb([_row_error(e) for e in errors], dumps=_dumps), job.job_id))
        status = Status(job.job_id, JobState.FAILED, job.row_count, fresh[1], error, 0, len(bad), errors)
        return WriteResult([status], 0, 0)


def _row_error(e: RowError) -> dict:
    return {"row": e.row, "column": e.column, "sqlstate": e.sqlstate, "message": e.message}


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()
