"""sink.writer.PgWriter against a real PostgreSQL: COPY of every rides type, the ledger, bad jobs, races."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from common.wire import Group, Job, JobState, Status
from sink.writer import PgWriter, WriteResult
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
