"""sink.writer.PgWriter against a real PostgreSQL: COPY of every rides type, the ledger, bad jobs, races.

Also the dead letters of rows holding backslashes and NULs (once a reported crash, replayed here
through a real gateway and sink) and statements canceled under the writer (kept, retried).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import sink.deadletter
from common.wire import Group, Job, JobState, Status
from sink.deadletter import NUL_NOTE
from sink.writer import PgWriter, TransientError, WriteResult
from tests.cluster import Cluster
from tests.conftest import wait_until

RIDES_COLUMNS = (
    "id", "user_id", "vehicle_model_id", "package_id", "travel_type_id", "from_area_id", "to_area_id",
    "from_city_id", "to_city_id", "from_date", "to_date", "online_booking", "mobile_site_booking",
    "booking_created", "from_lat", "from_long", "to_lat", "to_long", "car_cancellation",
)
TIMESTAMPS = {"from_date", "to_date", "booking_created"}
I16, I32, I64 = 2**15, 2**31, 2**63
ACCEPTED_AT = 1_712_345_678.25
_ids = itertools.count()


def new_job(table: str, *groups: Group, job_id: str | None = None) -> Job:
    return Job(job_id or f"job-{next(_ids)}", table, ACCEPTED_AT, tuple(groups))


def ride(ride_id: int, **overrides: Any) -> dict[str, Any]:
    """A valid rides row as a dict; ``overrides`` replace single columns."""
    row = {
        "id": ride_id, "user_id": 17, "vehicle_model_id": 12, "package_id": None, "travel_type_id": 2,
        "from_area_id": 393, "to_area_id": 1021, "from_city_id": 15, "to_city_id": None,
        "from_date": "2013-01-01T02:00:00+05:30", "to_date": None, "online_booking": True,
        "mobile_site_booking": False, "booking_created": "2013-01-01T01:39:00+05:30",
        "from_lat": 12.92415, "from_long": 77.67229, "to_lat": 12.92732, "to_long": 77.63575,
        "car_cancellation": False,
    }
    row.update(overrides)
    return row


def rides_group(*rows: dict[str, Any]) -> Group:
    return Group(RIDES_COLUMNS, [[r[c] for c in RIDES_COLUMNS] for r in rows])


def query(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def execute(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


def rides_ids(dsn: str) -> list[int]:
    return [r[0] for r in query(dsn, "SELECT id FROM public.rides ORDER BY id")]


def ledger(dsn: str) -> dict[str, tuple]:
    rows = query(dsn, "SELECT job_id, table_name, state, rows, extract(epoch FROM accepted_at)::float8, error"
                      " FROM zingest.ledger")
    return {r[0]: r[1:] for r in rows}


def by_id(result: WriteResult) -> dict[str, Status]:
    out = {s.job_id: s for s in result.statuses}
    assert len(out) == len(result.statuses), f"one status per job expected: {result.statuses}"
    return out


@pytest.fixture
def writer(rides_dsn: str) -> Iterator[PgWriter]:
    w = PgWriter(rides_dsn, application_name="zingest-test-writer")
    try:
        yield w
    finally:
        w.close()


# --- (a) every rides column type, round trip -------------------------------------------------

EDGE_RIDES = [
    # Upper edges of bigint / integer / smallint, every nullable column filled.
    ride(I64 - 1, user_id=-I64, vehicle_model_id=I32 - 1, package_id=-I32, travel_type_id=I16 - 1,
         from_area_id=0, to_area_id=-1, from_city_id=I32 - 1, to_city_id=-I32,
         from_date="2013-01-01T02:00:00+05:30", to_date="2013-01-01T02:00:00.123456-08:00",
         online_booking=True, mobile_site_booking=True, booking_created="2024-02-29T23:59:59.999999Z",
         from_lat=1.7976931348623157e308, from_long=5e-324, to_lat=-0.5, to_long=0.1 + 0.2,
         car_cancellation=True),
    # Lower edges, and None in every nullable column.
    ride(-I64, user_id=I64 - 1, vehicle_model_id=-I32, package_id=None, travel_type_id=-I16,
         from_area_id=None, to_area_id=None, from_city_id=None, to_city_id=None,
         from_date="1970-01-01T00:00:00+00:00", to_date=None, online_booking=False, mobile_site_booking=False,
         booking_created="1969-12-31T23:59:59.5-03:30", from_lat=None, from_long=None, to_lat=None,
         to_long=None, car_cancellation=False),
    # Ordinary values, more offsets (Nepal's +05:45, +14:00, -12:00, second precision past 2038).
    ride(0, package_id=I32 - 1, from_date="2038-01-19T03:14:08+05:45", to_date="2013-06-30T23:59:59+14:00",
         booking_created="1900-03-01T12:00:00-12:00", from_lat=-90.0, from_long=-180.0, to_lat=1e-300,
         to_long=-2.2250738585072014e-308),
]


def expected_value(column: str, value: Any) -> Any:
    if column in TIMESTAMPS and value is not None:
        return datetime.fromisoformat(value)
    return value


def test_copy_lands_every_rides_column_type(writer: PgWriter, rides_dsn: str) -> None:
    # Two groups in one job: the first two rows, then the third row with its columns in another order.
    reordered = tuple(reversed(RIDES_COLUMNS))
    third = EDGE_RIDES[2]
    job = new_job("rides", rides_group(*EDGE_RIDES[:2]), Group(reordered, [[third[c] for c in reordered]]))
    result = writer.write([job])
    (status,) = result.statuses
    assert status.state is JobState.COMMITTED, status.error
    assert status.rows == 3
    assert result.rows_written == 3 and result.duplicates == 0

    with psycopg.connect(rides_dsn, autocommit=True) as conn:
        # Read in a zone unlike any of the offsets written: timestamps must still be the same instants.
        conn.execute("SET TIME ZONE 'America/St_Johns'")
        got = conn.execute(f"SELECT {', '.join(RIDES_COLUMNS)} FROM public.rides ORDER BY id").fetchall()
    expected = sorted(
        (tuple(expected_value(c, r[c]) for c in RIDES_COLUMNS) for r in EDGE_RIDES), key=lambda t: t[0]
    )
    assert len(got) == 3
    for got_row, want_row in zip(got, expected, strict=True):
        for column, g, w in zip(RIDES_COLUMNS, got_row, want_row, strict=True):
            assert g == w, f"{column}: wrote {w!r}, read back {g!r}"
            assert type(g) is type(w), f"{column}: {type(g).__name__} is not {type(w).__name__}"
            if column in TIMESTAMPS and g is not None:
                assert g.tzinfo is not None and g.timestamp() == w.timestamp()


# --- (b) idempotency ------------------------------------------------------------------------


def test_writing_the_same_job_twice_lands_it_once(writer: PgWriter, rides_dsn: str) -> None:
    job = new_job("rides", rides_group(ride(1), ride(2), ride(3)))
    first = writer.write([job])
    (s1,) = first.statuses
    assert s1.state is JobState.COMMITTED and s1.committed_at is not None
    assert (first.rows_written, first.duplicates) == (3, 0)

    second = writer.write([job])
    (s2,) = second.statuses
    assert s2 == Status(job.job_id, JobState.COMMITTED, 3, s1.committed_at, None, rows_committed=3)
    assert (second.rows_written, second.duplicates) == (0, 1)

    # Another writer (another sink, a fresh connection) sees the same ledger.
    other = PgWriter(rides_dsn)
    try:
        third = other.write([job])
    finally:
        other.close()
    assert third.statuses == [s2] and third.duplicates == 1

    assert rides_ids(rides_dsn) == [1, 2, 3]
    assert ledger(rides_dsn) == {job.job_id: ("rides", "committed", 3, ACCEPTED_AT, None)}


def test_a_redelivered_copy_in_the_same_batch_lands_once(pg_dsn: str) -> None:
    # No unique key on the table, so only the writer can stop the second copy landing.
    execute(pg_dsn, "CREATE TABLE events (n integer)")
    job = new_job("events", Group(("n",), [[1], [2]]))
    w = PgWriter(pg_dsn)
    try:
        result = w.write([job, job])
    finally:
        w.close()
    assert [s.state for s in result.statuses] == [JobState.COMMITTED]
    assert result.rows_written == 2
    assert query(pg_dsn, "SELECT n FROM events ORDER BY n") == [(1,), (2,)]


def test_a_batch_mixing_new_and_already_committed_jobs(writer: PgWriter, rides_dsn: str) -> None:
    old = new_job("rides", rides_group(ride(1)))
    writer.write([old])
    new = new_job("rides", rides_group(ride(2), ride(3)))
    result = writer.write([old, new])
    statuses = by_id(result)
    assert statuses[old.job_id].state is JobState.COMMITTED
    assert statuses[new.job_id].state is JobState.COMMITTED
    assert (result.rows_written, result.duplicates) == (2, 1)
    assert rides_ids(rides_dsn) == [1, 2, 3]


# --- (c) different column sets in one batch ---------------------------------------------------

EXTRAS_DDL = """
CREATE TABLE public.extras (
    id           integer PRIMARY KEY,
    note         text NOT NULL DEFAULT 'none',
    n            integer DEFAULT 7,
    "Mixed Case" text DEFAULT 'mc',
    created      timestamptz NOT NULL DEFAULT '2000-01-01T00:00:00Z'
)
"""


def test_jobs_naming_different_columns_get_defaults_for_the_rest(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, EXTRAS_DDL)
    a = new_job("extras", Group(("id", "note"), [[1, "one"], [2, "two"]]), Group(("id", "Mixed Case"), [[3, "x"]]))
    b = new_job("extras", Group(("id", "n"), [[4, 40]]), Group(("n", "id"), [[50, 5]]), Group(("id",), [[6]]))
    c = new_job("rides", rides_group(ride(1)))
    result = writer.write([a, b, c])
    statuses = by_id(result)
    assert {s.state for s in statuses.values()} == {JobState.COMMITTED}
    # One transaction: one commit time for every job in the batch.
    assert len({s.committed_at for s in statuses.values()}) == 1
    assert result.rows_written == 7
    rows = query(rides_dsn, 'SELECT id, note, n, "Mixed Case", created = \'2000-01-01Z\' FROM extras ORDER BY id')
    assert rows == [
        (1, "one", 7, "mc", True),
        (2, "two", 7, "mc", True),
        (3, "none", 7, "x", True),
        (4, "none", 40, "mc", True),
        (5, "none", 50, "mc", True),
        (6, "none", 7, "mc", True),
    ]
    assert rides_ids(rides_dsn) == [1]


def test_a_dot_in_a_table_name_is_part_of_the_name_not_a_schema(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, 'CREATE SCHEMA other; CREATE TABLE other.victim (x int); '
                       'CREATE TABLE public."other.victim" (x int)')
    result = writer.write([new_job("other.victim", Group(("x",), [[3]]))])
    assert [s.state for s in result.statuses] == [JobState.COMMITTED]
    assert query(rides_dsn, 'SELECT x FROM public."other.victim"') == [(3,)]
    assert query(rides_dsn, "SELECT x FROM other.victim") == []


def test_program_limit_errors_are_bad_data_not_an_outage(writer: PgWriter, rides_dsn: str) -> None:
    """psycopg files SQLSTATE class 54 under OperationalError; it must fail the job, not loop forever."""
    execute(rides_dsn, "CREATE TABLE tagged (id int, tags int[])")
    deep = [[[[[[[1]]]]]]]  # 7 dimensions: PostgreSQL allows 6 (54000)
    bad = new_job("tagged", Group(("id", "tags"), [[1, deep]]))
    good = new_job("tagged", Group(("id", "tags"), [[2, [1, 2]]]))
    statuses = by_id(writer.write([bad, good]))
    assert statuses[bad.job_id].state is JobState.FAILED
    assert statuses[bad.job_id].errors[0].sqlstate == "54000"
    assert statuses[good.job_id].state is JobState.COMMITTED


def test_a_value_too_deep_to_adapt_fails_its_job_without_crashing(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, "CREATE TABLE deep (id int, v int[])")
    value: list = []
    for _ in range(5000):
        value = [value]
    bad = new_job("deep", Group(("id", "v"), [[1, value]]))
    good = new_job("deep", Group(("id", "v"), [[2, None]]))
    statuses = by_id(writer.write([bad, good]))
    assert statuses[bad.job_id].state is JobState.FAILED and "RecursionError" in statuses[bad.job_id].error
    (kept,) = query(rides_dsn, 'SELECT "row" FROM zingest.dead_letters')
    assert kept[0] == {"id": 1, "v": "<list that JSON cannot hold>"}
    assert statuses[good.job_id].state is JobState.COMMITTED
    assert query(rides_dsn, "SELECT id FROM deep") == [(2,)]


# --- (d) bad rows among good ones: the good rows land, the bad ones are dead-lettered -----------

# name -> (job factory, SQLSTATE, positions of the refused rows, column PostgreSQL blames)
BAD_JOBS: dict[str, tuple[Callable[[], Job], str, list[int], str | None]] = {
    "duplicate primary key within the job": (
        lambda: new_job("rides", rides_group(ride(20), ride(21), ride(20))), "23505", [2], None),
    "text in an integer column": (
        lambda: new_job("rides", rides_group(ride(20), ride(21, vehicle_model_id="abc"), ride(22))),
        "22P02", [1], "vehicle_model_id"),
    "not null column null": (
        lambda: new_job("rides", rides_group(ride(20), ride(21, user_id=None))), "23502", [1], None),
    "smallint out of range": (
        lambda: new_job("rides", rides_group(ride(20, travel_type_id=I16), ride(21))), "22003", [0], "travel_type_id"),
    "bad timestamp": (
        lambda: new_job("rides", rides_group(ride(20), ride(21, from_date="31/12/2013 25:00"))),
        "22008", [1], "from_date"),
    "two bad rows": (
        lambda: new_job("rides", rides_group(ride(20, user_id=None), ride(21), ride(22, vehicle_model_id="x"))),
        "23502", [0, 2], None),
}


@pytest.mark.parametrize("make_bad,sqlstate,positions,column", BAD_JOBS.values(), ids=BAD_JOBS.keys())
def test_bad_rows_are_set_aside_and_every_other_row_lands(
    writer: PgWriter, rides_dsn: str, make_bad: Callable[[], Job], sqlstate: str, positions: list[int],
    column: str | None,
) -> None:
    good1 = new_job("rides", rides_group(ride(1), ride(2), ride(3)))
    bad = make_bad()
    good2 = new_job("rides", rides_group(ride(10), ride(11)))
    result = writer.write([good1, bad, good2])
    statuses = by_id(result)
    assert statuses[good1.job_id].state is JobState.COMMITTED
    assert statuses[good2.job_id].state is JobState.COMMITTED
    partial = statuses[bad.job_id]
    assert partial.state is JobState.PARTIAL
    assert (partial.rows, partial.rows_committed, partial.rows_rejected) == (
        bad.row_count, bad.row_count - len(positions), len(positions))
    assert [e.row for e in partial.errors] == positions
    assert partial.errors[0].sqlstate == sqlstate and partial.errors[0].column == column
    assert partial.error is not None and f"{sqlstate}: " in partial.error
    landed = {r[0] for g in bad.groups for k, r in enumerate(g.rows) if k not in positions}
    assert set(rides_ids(rides_dsn)) == {1, 2, 3, 10, 11} | landed
    assert result.rows_written == 5 + len(landed)

    dead = query(rides_dsn, 'SELECT job_id, table_name, row_number, "row", sqlstate, column_name, error '
                            "FROM zingest.dead_letters ORDER BY row_number")
    assert [(d[0], d[1], d[2], d[4]) for d in dead][:1] == [(bad.job_id, "rides", positions[0], sqlstate)]
    assert [d[2] for d in dead] == positions
    sent = bad.groups[0].rows[positions[0]]
    assert dead[0][3] == dict(zip(RIDES_COLUMNS, sent))  # the row exactly as sent
    assert dead[0][5] == column and dead[0][6]

    book = ledger(rides_dsn)
    assert book[bad.job_id][1:3] == ("partial", bad.row_count)
    again = writer.write([bad])  # a redelivery: answered from the ledger, nothing written twice
    assert again.statuses == [partial]
    assert (again.rows_written, again.duplicates) == (0, 1)
    assert len(query(rides_dsn, "SELECT 1 FROM zingest.dead_letters")) == len(positions)


STATEMENT_ERRORS = {
    "unknown column": (lambda: new_job("rides", Group(("id", "colour"), [[20, "red"], [21, "blue"]])), "42703"),
    "unknown table": (lambda: new_job("nowhere", Group(("id",), [[20], [21]])), "42P01"),
}


@pytest.mark.parametrize("make_bad,sqlstate", STATEMENT_ERRORS.values(), ids=STATEMENT_ERRORS.keys())
def test_a_job_whose_statement_fails_keeps_every_row_as_a_dead_letter(
    writer: PgWriter, rides_dsn: str, make_bad: Callable[[], Job], sqlstate: str
) -> None:
    good = new_job("rides", rides_group(ride(1)))
    bad = make_bad()
    statuses = by_id(writer.write([good, bad]))
    assert statuses[good.job_id].state is JobState.COMMITTED
    failed = statuses[bad.job_id]
    assert failed.state is JobState.FAILED and (failed.rows_committed, failed.rows_rejected) == (0, 2)
    assert failed.errors[0].sqlstate == sqlstate
    dead = query(rides_dsn, 'SELECT row_number, "row", sqlstate FROM zingest.dead_letters ORDER BY row_number')
    assert [(d[0], d[2]) for d in dead] == [(0, sqlstate), (1, sqlstate)]
    assert dead[0][1] == dict(zip(bad.groups[0].columns, bad.groups[0].rows[0]))
    assert rides_ids(rides_dsn) == [1]


def test_isolation_finds_many_bad_rows_in_a_large_job(writer: PgWriter, rides_dsn: str) -> None:
    rows = [ride(i, user_id=None) if i % 97 == 0 else ride(i) for i in range(1, 2001)]
    job = new_job("rides", rides_group(*rows))
    (status,) = writer.write([job]).statuses
    bad = [i - 1 for i in range(1, 2001) if i % 97 == 0]
    assert status.state is JobState.PARTIAL and status.rows_rejected == len(bad)
    assert [e.row for e in status.errors] == bad[:5]
    assert len(rides_ids(rides_dsn)) == 2000 - len(bad)


def test_a_job_with_every_row_refused_is_failed_and_stays_so(writer: PgWriter, rides_dsn: str) -> None:
    writer.write([new_job("rides", rides_group(ride(100)))])
    clash = new_job("rides", rides_group(ride(100)))
    (status,) = writer.write([clash]).statuses
    assert status.state is JobState.FAILED and status.rows_committed == 0 and "23505" in status.error

    execute(rides_dsn, "DELETE FROM public.rides WHERE id = 100")  # what blocked it is gone
    (again,) = writer.write([clash]).statuses
    assert again == status  # a job's fate is decided once
    assert rides_ids(rides_dsn) == []


# --- (e) two sinks holding the same job at once -----------------------------------------------


Outcome = WriteResult | BaseException | None


def run_in_threads(writers: list[PgWriter], jobs: list[Job]) -> tuple[list[Outcome], list[threading.Thread]]:
    """Each writer writes ``jobs`` from its own thread, all released together by a barrier."""
    barrier = threading.Barrier(len(writers))
    results: list[Outcome] = [None] * len(writers)

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = writers[i].write(jobs)
        except BaseException as exc:  # reported by the test thread below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(writers))]
    for t in threads:
        t.start()
    return results, threads


def join_all(threads: list[threading.Thread], results: list[Outcome]) -> list[WriteResult]:
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a writer thread hung"
    done = []
    for r in results:
        if isinstance(r, BaseException):
            raise r
        assert r is not None
        done.append(r)
    return done


@pytest.fixture
def two_writers(rides_dsn: str) -> Iterator[list[PgWriter]]:
    writers = [PgWriter(rides_dsn, application_name=f"zingest-test-race-{n}") for n in "ab"]
    try:
        for w in writers:
            w.connect()
        yield writers
    finally:
        for w in writers:
            w.close()


def check_landed_once(results: list[WriteResult], job: Job) -> None:
    fresh = [r for r in results if r.duplicates == 0]
    repeat = [r for r in results if r.duplicates == 1]
    assert len(fresh) == 1 and len(repeat) == 1, results
    assert fresh[0].rows_written == job.row_count and repeat[0].rows_written == 0
    (s1,), (s2,) = fresh[0].statuses, repeat[0].statuses
    assert s1.state is s2.state is JobState.COMMITTED
    assert s1 == s2


def test_two_writers_holding_the_same_job_overlap_and_land_it_once(
    two_writers: list[PgWriter], rides_dsn: str
) -> None:
    job = new_job("rides", rides_group(*(ride(i) for i in range(1, 51))))
    # Hold a lock that COPY into rides needs, so the first writer stops inside its
    # transaction with the ledger row inserted; the second then queues on that row.
    # Both are seen waiting before the lock is released: the overlap is certain.
    blocker = psycopg.connect(rides_dsn)
    monitor = psycopg.connect(rides_dsn, autocommit=True)
    try:
        blocker.execute("LOCK TABLE public.rides IN SHARE MODE")
        results, threads = run_in_threads(two_writers, [job])

        def both_waiting() -> bool:
            (n,), = monitor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name LIKE 'zingest-test-race-%%' AND wait_event_type = 'Lock'"
            ).fetchall()
            return n == 2

        wait_until(both_waiting, timeout=30, what="both writers to wait on locks")
        blocker.commit()
        check_landed_once(join_all(threads, results), job)
    finally:
        blocker.close()
        monitor.close()
    assert rides_ids(rides_dsn) == list(range(1, 51))
    assert list(ledger(rides_dsn)) == [job.job_id]


def test_two_writers_racing_on_many_jobs_land_each_once(two_writers: list[PgWriter], rides_dsn: str) -> None:
    jobs = [new_job("rides", rides_group(ride(10 * n + 1), ride(10 * n + 2))) for n in range(10)]
    for job in jobs:
        results, threads = run_in_threads(two_writers, [job])
        check_landed_once(join_all(threads, results), job)
    assert rides_ids(rides_dsn) == sorted(10 * n + k for n in range(10) for k in (1, 2))
    assert set(ledger(rides_dsn)) == {j.job_id for j in jobs}


def test_a_deferred_constraint_is_isolated_not_retried_forever(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, "CREATE TABLE parents (id int PRIMARY KEY); INSERT INTO parents VALUES (1);"
                       "CREATE TABLE dchild (id int, parent_id int REFERENCES parents DEFERRABLE INITIALLY DEFERRED)")
    job = new_job("dchild", Group(("id", "parent_id"), [[1, 1], [2, 999], [3, 1]]))
    (status,) = writer.write([job]).statuses
    assert status.state is JobState.PARTIAL and [e.row for e in status.errors] == [1]
    assert status.errors[0].sqlstate == "23503"
    assert query(rides_dsn, "SELECT id FROM dchild ORDER BY id") == [(1,), (3,)]


def test_a_nul_in_a_type_psycopg_refuses_is_still_kept_as_a_dead_letter(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, "CREATE TABLE hosts (id int, ip inet)")
    job = new_job("hosts", Group(("id", "ip"), [[1, "10.0.0.1"], [2, "1.2.3.4\x00"]]))
    (status,) = writer.write([job]).statuses
    assert status.state is JobState.PARTIAL and status.rows_rejected == 1
    (kept,) = query(rides_dsn, 'SELECT "row" FROM zingest.dead_letters')
    assert kept[0] == {"id": 2, "ip": "1.2.3.4\\u0000"}  # the NUL kept as the text \u0000


def test_a_table_name_that_looks_like_copy_context_does_not_mislead(writer: PgWriter, rides_dsn: str) -> None:
    execute(rides_dsn, 'CREATE TABLE "a, line 1" (id int, qty int CHECK (qty >= 0))')
    job = new_job("a, line 1", Group(("id", "qty"), [[0, 1], [1, 1], [2, 1], [3, -1], [4, 1]]))
    (status,) = writer.write([job]).statuses
    assert status.state is JobState.PARTIAL and [e.row for e in status.errors] == [3]
    assert query(rides_dsn, 'SELECT id FROM "a, line 1" ORDER BY id') == [(0,), (1,), (2,), (4,)]


def test_a_job_whose_every_row_is_refused_keeps_every_row(writer: PgWriter, rides_dsn: str) -> None:
    # The case of a file sent twice: every row refused. The window restarts at one row after each
    # refusal, so this costs one COPY per row rather than one per remaining row for each refusal.
    execute(rides_dsn, "CREATE TABLE checked (id int, qty int CHECK (qty >= 0))")
    job = new_job("checked", Group(("id", "qty"), [[i, -1] for i in range(3000)]))
    (status,) = writer.write([job]).statuses
    assert status.state is JobState.FAILED and status.rows_rejected == 3000
    assert [d[0] for d in query(rides_dsn, "SELECT row_number FROM zingest.dead_letters ORDER BY 1")] == list(
        range(3000))
    assert query(rides_dsn, "SELECT count(*) FROM checked") == [(0,)]


def test_refused_rows_are_reported_where_the_client_sent_them(writer: PgWriter, rides_dsn: str) -> None:
    # Objects naming different columns become groups; positions map each row back to the request.
    execute(rides_dsn, "CREATE TABLE mixed (id int, qty int CHECK (qty >= 0), note text)")
    job = new_job("mixed",
                  Group(("id", "qty"), [[0, 1], [2, -1], [4, 1]], positions=[0, 2, 4]),
                  Group(("id", "qty", "note"), [[1, -1, "a"], [3, 1, "b"]], positions=[1, 3]))
    (status,) = writer.write([job]).statuses
    assert [e.row for e in status.errors] == [1, 2]
    assert [d[0] for d in query(rides_dsn, "SELECT row_number FROM zingest.dead_letters ORDER BY 1")] == [1, 2]


# --- (f) dead letters of rows holding backslashes and NULs --------------------------------------

LT_DDL = "CREATE TABLE lt (id int, ck int CHECK (ck >= 0), payload text, doc json, docb jsonb, ip inet)"


def dead_letters(dsn: str) -> list[tuple]:
    return query(dsn, 'SELECT row_number, "row", sqlstate, error FROM zingest.dead_letters ORDER BY row_number')


def test_the_reported_row_through_a_real_gateway_and_sink(pg_dsn: str, ports_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    """The report: the six characters \\u0000 in a row refused by a check once killed every sink in turn."""
    execute(pg_dsn, "CREATE TABLE lt (id int, ck int check (ck >= 0), payload text)")
    # A NUL can come through the wire too: the gateway refuses it in text and jsonb, not in inet or json.
    execute(pg_dsn, "CREATE TABLE nt (id int, ck int CHECK (ck >= 0), ip inet, doc json)")
    logs = tmp_path / "logs"
    logs.mkdir()
    cluster = Cluster({**ports_env, "ZINGEST_DATABASE__DSN": pg_dsn}, logs, sinks=1).start()
    try:
        json_type = {"Content-Type": "application/json"}
        reported = rb'[{"id":1,"ck":-1,"payload":"\\u0000"},{"id":2,"ck":1,"payload":"good"}]'
        nuls = (rb'[{"id":1,"ck":1,"ip":"10.0.0.1","doc":{}},{"id":2,"ck":1,"ip":"1.2.3.4\u0000","doc":{}},'
                rb'{"id":3,"ck":-1,"ip":"10.0.0.3","doc":{"k":"a\u0000b","\u0000":1}}]')
        finals = []
        for table, body in (("lt", reported), ("nt", nuls)):
            r = cluster.request("POST", f"/v1/ingest/{table}", body, json_type)
            assert r.status == 202, r.body
            finals.append(wait_until(lambda i=r.body["job_id"]: (lambda b: b if b["state"] != "accepted" else None)(
                cluster.job(i)), 30, what=f"the job into {table} to be final"))
        assert cluster.sinks[0].poll() is None, cluster.log_text()  # the sink lives on
    finally:
        cluster.stop()
    assert "Traceback" not in cluster.log_text()
    assert [(f["state"], f["rows_committed"], f["rows_rejected"]) for f in finals] == [("partial", 1, 1),
                                                                                      ("partial", 1, 2)]
    assert query(pg_dsn, "SELECT id, ck, payload FROM lt") == [(2, 1, "good")]
    assert query(pg_dsn, "SELECT id FROM nt") == [(1,)]
    lt, nt2, nt3 = query(pg_dsn, 'SELECT "row", sqlstate, error FROM zingest.dead_letters ORDER BY table_name, '
                                 "row_number")
    assert lt[:2] == ({"id": 1, "ck": -1, "payload": "\\u0000"}, "23514")  # the six characters, as sent
    assert NUL_NOTE not in lt[2]
    assert nt2[0] == {"id": 2, "ck": 1, "ip": "1.2.3.4\\u0000", "doc": {}} and nt2[2].endswith(NUL_NOTE)
    assert nt3[:2] == ({"id": 3, "ck": -1, "ip": "10.0.0.3", "doc": {"k": "a\\u0000b", "\\u0000": 1}}, "23514")
    assert nt3[2].endswith(NUL_NOTE)


# name -> (column, value as the sink gets it, value as the dead letter keeps it, NULs replaced)
BACKSLASHES_AND_NULS: dict[str, tuple[str, Any, Any, bool]] = {
    "backslash u0000 as text": ("payload", "\\u0000", "\\u0000", False),
    "escaped backslash then u0000": ("payload", "\\\\u0000", "\\\\u0000", False),
    "three backslashes then u0000": ("payload", "x\\\\\\u0000y", "x\\\\\\u0000y", False),
    "backslash x00": ("payload", "\\x00", "\\x00", False),
    "a real NUL": ("payload", "a\x00b", "a\\u0000b", True),
    "a backslash then a real NUL": ("payload", "\\\x00", "\\\\u0000", True),
    "a real NUL in inet": ("ip", "1.2.3.4\x00", "1.2.3.4\\u0000", True),
    "json text holding the six characters": ("doc", json.dumps({"k": "\\u0000"}), {"k": "\\u0000"}, False),
    "json holding NULs in a key and a value": ("doc", json.dumps({"\x00": ["a\x00"]}), {"\\u0000": ["a\\u0000"]},
                                               True),
    "jsonb text holding the six characters": ("docb", json.dumps(["\\\\u0000"]), ["\\\\u0000"], False),
}


@pytest.mark.parametrize("column,sent,kept,replaced", BACKSLASHES_AND_NULS.values(),
                         ids=BACKSLASHES_AND_NULS.keys())
def test_a_refused_row_is_kept_as_sent_whatever_backslashes_and_nuls_it_holds(
    writer: PgWriter, rides_dsn: str, column: str, sent: Any, kept: Any, replaced: bool
) -> None:
    execute(rides_dsn, LT_DDL)
    # Refused by the check, or by PostgreSQL (psycopg) for the NUL itself.
    columns = ("id", "ck", column)
    job = new_job("lt", Group(columns, [[1, 1, None], [2, -1, sent], [3, 1, None]]))
    (status,) = writer.write([job]).statuses
    assert (status.state, status.rows_committed, status.rows_rejected) == (JobState.PARTIAL, 2, 1), status.error
    assert query(rides_dsn, "SELECT id FROM lt ORDER BY id") == [(1,), (3,)]
    ((position, row, _, error),) = dead_letters(rides_dsn)
    assert position == 1 and row == {"id": 2, "ck": -1, column: kept}
    assert error.endswith(NUL_NOTE) is replaced
    assert writer.dead_letters.kept_as_text == 0


def test_a_row_jsonb_will_not_take_is_kept_as_its_text(writer: PgWriter, rides_dsn: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    execute(rides_dsn, "CREATE TABLE big (id int, n numeric CHECK (n < 0), doc json)")
    huge = 2**70  # numeric takes it; orjson (64-bit ints) cannot write it as JSON
    job = new_job("big", Group(("id", "n", "doc"), [[1, -1, None], [2, huge, None], [3, 5, '{"k": "a\\u0000"}']]))
    # As if json_safe missed a NUL one day: jsonb then refuses the row (22P05), and must not stop the job.
    monkeypatch.setattr(sink.deadletter, "json_safe", lambda value, depth=0: value)
    monkeypatch.setattr(sink.deadletter, "holds_nul", lambda value, depth=0: False)
    (status,) = writer.write([job]).statuses
    assert (status.state, status.rows_committed, status.rows_rejected) == (JobState.PARTIAL, 1, 2), status.error
    assert query(rides_dsn, "SELECT id FROM big") == [(1,)]
    (p2, row2, _, error2), (p3, row3, _, error3) = dead_letters(rides_dsn)
    assert (p2, row2) == (1, f"{{'id': 2, 'n': {huge}, 'doc': None}}")
    assert "row kept as its text" in error2 and "TypeError" in error2
    assert (p3, row3) == (2, "{'id': 3, 'n': 5, 'doc': '{\"k\": \"a\\\\u0000\"}'}")
    assert "row kept as its text" in error3 and "22P05" in error3
    assert writer.dead_letters.kept_as_text == 1  # the first was kept as text before any insert


# --- (g) a canceled statement is not bad data: the batch is kept and written again --------------

# name -> (connection option, SQLSTATE of each retry); pg_cancel_backend comes from the test itself.
CANCELS = {
    "statement_timeout": ("-c statement_timeout=200", "57014"),
    "pg_cancel_backend": (None, "57014"),
    "lock_timeout": ("-c lock_timeout=200", "55P03"),
}


@pytest.mark.parametrize("options,sqlstate", CANCELS.values(), ids=CANCELS.keys())
def test_a_canceled_statement_keeps_the_batch_and_lands_it_once(
    pg_dsn: str, options: str | None, sqlstate: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sink.writer")
    execute(pg_dsn, LT_DDL)
    setup = PgWriter(pg_dsn)
    setup.connect()  # zingest's schema, before a short timeout applies to anything
    setup.close()
    name = "zingest-test-cancel"
    writer = PgWriter(make_conninfo(pg_dsn, options=options) if options else pg_dsn, application_name=name)
    job = new_job("lt", Group(("id", "ck", "payload"), [[i, i, f"row {i}"] for i in range(1, 51)]))
    retries: list[str] = []
    outcome: list[WriteResult | BaseException] = []

    def sink() -> None:  # the runner's loop (sink.runner.Sink._flush) less its back-off
        while True:
            try:
                outcome.append(writer.write([job]))
                return
            except TransientError as exc:
                retries.append(str(exc))
            except BaseException as exc:  # reported by the test thread below
                outcome.append(exc)
                return

    def waiting_on_the_lock() -> int | None:
        row = monitor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                              " AND application_name = %s AND wait_event_type = 'Lock'", (name,)).fetchone()
        return row[0] if row else None

    blocker = psycopg.connect(pg_dsn)
    monitor = psycopg.connect(pg_dsn, autocommit=True)
    thread = threading.Thread(target=sink, daemon=True)
    try:
        blocker.execute("LOCK TABLE public.lt IN ACCESS EXCLUSIVE MODE")
        thread.start()
        for n in range(2):
            pid = wait_until(waiting_on_the_lock, 30, what="the writer to wait on the lock")
            if options is None:
                monitor.execute("SELECT pg_cancel_backend(%s)", (pid,))
            wait_until(lambda n=n: len(retries) > n or outcome, 30, what="the writer to be canceled")
        # Canceled twice: it retried at least once, and is waiting for the lock again.
        wait_until(waiting_on_the_lock, 30, what="the writer to retry")
        blocker.commit()
        thread.join(60)
        assert not thread.is_alive(), "the writer hung"
    finally:
        blocker.close()
        monitor.close()
        thread.join(60)
        writer.close()
    (result,) = outcome
    if isinstance(result, BaseException):
        raise result
    (status,) = result.statuses
    assert status.state is JobState.COMMITTED and result.rows_written == 50
    assert len(retries) >= 2 and all(r.startswith(f"{sqlstate}: ") for r in retries), retries
    assert query(pg_dsn, "SELECT count(*), count(DISTINCT id) FROM lt") == [(50, 50)]
    assert query(pg_dsn, "SELECT count(*) FROM zingest.dead_letters") == [(0,)]
    assert ledger(pg_dsn) == {job.job_id: ("lt", "committed", 50, ACCEPTED_AT, None)}
    warnings = [r.getMessage() for r in caplog.records if "SQLSTATE 57014" in r.getMessage()]
    if sqlstate == "57014":
        assert writer.cancels == len(retries) == len(warnings)
        forever = "statement_timeout is 200ms for this sink: if a batch's COPY takes longer than that"
        assert all((forever in w) is (options is not None) for w in warnings), warnings
    else:
        assert writer.cancels == 0 and not warnings
