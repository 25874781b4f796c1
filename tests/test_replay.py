"""`zingest replay` against a real gateway and sink (tests/cluster.py) and a real PostgreSQL.

Rows that reference a missing parent become dead letters; once the parent rows
exist, `zingest replay` (a real subprocess) sends them back through the gateway.
The child table has no unique key on purpose: a row landed twice stays visible.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.cluster import Cluster, running_cluster
from tests.conftest import child_env, free_port, zingest_cmd
from zingest import replay, send

DDL = """
CREATE TABLE parents (id integer PRIMARY KEY);
CREATE TABLE kids (id bigint NOT NULL, parent_id integer NOT NULL REFERENCES parents (id), v text,
                   note text NOT NULL DEFAULT 'default');
INSERT INTO parents VALUES (1);
"""
ROWS = 10  # kid i has parent i % 3 + 1: parent 1 -> 3 kids, parent 2 -> 4 kids (1, 4, 7, 10), parent 3 -> 3 kids


@pytest.fixture
def cluster(pg_dsn: str, ports_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(pg_dsn, DDL, ports_env, tmp_path) as c:
        yield c


def url(cluster: Cluster) -> str:
    return f"http://{cluster.host}:{cluster.port}"


def post_kids(cluster: Cluster) -> str:
    """Post ROWS kids (without `note`) and wait for the job: partial, the kids of parents 2 and 3 dead-lettered."""
    body = "\n".join(json.dumps({"id": i, "parent_id": i % 3 + 1, "v": f"kid {i}"}) for i in range(1, ROWS + 1))
    r = cluster.request("POST", "/v1/ingest/kids?wait=true", body.encode(),
                        {"Content-Type": "application/x-ndjson"}, timeout=30)
    assert r.status == 200 and r.body["state"] == "partial" and r.body["rows_committed"] == 3, r.body
    return r.body["job_id"]


def run_replay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(zingest_cmd("replay", "--table", "kids", *args), env=child_env(env or {}),
                          capture_output=True, text=True, timeout=120, check=False)


def query(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def dead_letters(dsn: str) -> list[tuple]:
    """(id, job_id, kid id) of the dead letters of kids."""
    return query(dsn, """SELECT id, job_id, ("row"->>'id')::int FROM zingest.dead_letters
                          WHERE table_name = 'kids' ORDER BY id""")


def kid_counts(dsn: str) -> dict[int, int]:
    return dict(query(dsn, "SELECT id, count(*) FROM kids GROUP BY id"))


def add_parents(dsn: str, *ids: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO parents SELECT unnest(%s::int[])", (list(ids),))


def test_replay_lands_dead_letters_once_the_parents_exist(cluster: Cluster, pg_dsn: str) -> None:
    job_id = post_kids(cluster)
    before = dead_letters(pg_dsn)
    assert len(before) == 7 and {j for _, j, _ in before} == {job_id}

    dry = run_replay("--dry-run", "--dsn", pg_dsn, "--url", url(cluster))
    assert dry.returncode == 0, dry.stderr
    assert "would replay 7 dead letters of kids in 1 jobs" in dry.stdout
    assert "23503         7  insert or update on table \"kids\" violates foreign key" in dry.stdout
    assert dead_letters(pg_dsn) == before and sum(kid_counts(pg_dsn).values()) == 3
    assert query(pg_dsn, "SELECT count(*) FROM zingest.ledger") == [(1,)]

    add_parents(pg_dsn, 2, 3)
    nowhere = run_replay("--dsn", pg_dsn, "--url", f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 2 and "cannot reach the gateway" in nowhere.stderr
    assert dead_letters(pg_dsn) == before

    done = run_replay("--dsn", pg_dsn, "--url", url(cluster))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "replayed 7 dead letters of kids in 1 jobs: 7 landed, 0 refused again"
    assert kid_counts(pg_dsn) == {i: 1 for i in range(1, ROWS + 1)}
    # Landed like a new row: the column the row left out took its default.
    assert query(pg_dsn, "SELECT DISTINCT note FROM kids") == [("default",)]
    assert dead_letters(pg_dsn) == []
    assert query(pg_dsn, "SELECT state FROM zingest.ledger WHERE idempotency_key LIKE 'replay:kids:%'") == [
        ("committed",)]


def test_rows_refused_again_become_new_dead_letters_of_the_new_job(cluster: Cluster, pg_dsn: str) -> None:
    job_id = post_kids(cluster)
    old_ids = {i for i, _, _ in dead_letters(pg_dsn)}
    add_parents(pg_dsn, 2)  # parent 3 is still missing
    # The DSN from the configuration (environment) this time.
    r = run_replay("--url", url(cluster), env={"ZINGEST_DATABASE__DSN": pg_dsn})
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.strip() == ("replayed 7 dead letters of kids in 1 jobs: 4 landed, 3 refused again"
                                " (see zingest.dead_letters)")
    (new_job,), = query(pg_dsn, "SELECT job_id FROM zingest.ledger WHERE idempotency_key LIKE 'replay:kids:%'")
    now = dead_letters(pg_dsn)
    assert not old_ids & {i for i, _, _ in now}, "old entries left behind"
    assert [(j, kid) for _, j, kid in now] == [(new_job, 2), (new_job, 5), (new_job, 8)] and new_job != job_id
    assert kid_counts(pg_dsn) == {i: 1 for i in range(1, ROWS + 1) if i % 3 != 2}

    add_parents(pg_dsn, 3)  # the new dead letters replay like any others
    r = run_replay("--url", url(cluster), env={"ZINGEST_DATABASE__DSN": pg_dsn})
    assert r.returncode == 0 and r.stdout.startswith("replayed 3 dead letters of kids in 1 jobs: 3 landed"), r.stdout
    assert kid_counts(pg_dsn) == {i: 1 for i in range(1, ROWS + 1)} and dead_letters(pg_dsn) == []


def test_second_replay_after_a_crash_between_send_and_delete_lands_nothing_twice(cluster: Cluster,
                                                                                  pg_dsn: str) -> None:
    post_kids(cluster)
    add_parents(pg_dsn, 2, 3)
    # The first replay, by hand: three batches (3 + 3 + 1) sent and final, then a "crash" after
    # only the first batch's entries were removed.
    letters = replay.read_dead_letters(pg_dsn, "kids", None)
    batches = replay.plan("kids", letters, 3)
    results = asyncio.run(replay.send_batches(batches, send.Options(url(cluster), "kids")))
    assert sorted(r.outcome for r in results) == [send.Outcome.COMMITTED] * 3
    first_jobs = {r.job_id for r in results}
    assert replay.remove_carried(pg_dsn, "kids", batches[:1], results).replayed == 3
    assert kid_counts(pg_dsn) == {i: 1 for i in range(1, ROWS + 1)} and len(dead_letters(pg_dsn)) == 4

    r = run_replay("--dsn", pg_dsn, "--url", url(cluster), "--batch-rows", "3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "replayed 4 dead letters of kids in 2 jobs: 4 landed, 0 refused again"
    assert kid_counts(pg_dsn) == {i: 1 for i in range(1, ROWS + 1)}, "a replayed row landed twice"
    assert dead_letters(pg_dsn) == []
    # The second run got the first run's jobs back for its keys: no new job was written.
    replay_jobs = query(pg_dsn, "SELECT job_id FROM zingest.ledger WHERE idempotency_key LIKE 'replay:kids:%'")
    assert {j for j, in replay_jobs} == first_jobs


def test_plan_cuts_per_job_and_the_same_way_after_whole_batches_are_gone() -> None:
    letters = [replay.DeadLetter(i, "a" if i % 4 else "b", "23503", "no parent", f'{{"id": {i}}}')
               for i in range(1, 12)]
    batches = replay.plan("kids", letters, 3)
    assert [b.ids for b in batches] == [(1, 2, 3), (5, 6, 7), (9, 10, 11), (4, 8)]
    assert batches[0].key == "replay:kids:a:1-3:3" and batches[0].batch.body == b'{"id": 1}\n{"id": 2}\n{"id": 3}\n'
    gone = set(batches[1].ids)
    again = replay.plan("kids", [d for d in letters if d.id not in gone], 3)
    assert [b.key for b in again] == [b.key for b in batches if b is not batches[1]]


def test_usage_and_connection_errors_exit_2(tmp_path: Path) -> None:
    r = run_replay()
    assert r.returncode == 2 and "no database: pass --dsn" in r.stderr
    r = run_replay("--dsn", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert r.returncode == 2 and "database error" in r.stderr
    r = run_replay("--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "config file not found" in r.stderr
