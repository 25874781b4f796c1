"""`zingest send` (a real subprocess) against a real gateway and sink and a real PostgreSQL.

Sending a file again is the retry a person makes after a crash or a job of
unknown fate. With ``--key`` it must land nothing twice and make no dead
letters; without it, the primary key refuses every row of the second send.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.cluster import Cluster, running_cluster
from tests.conftest import child_env, zingest_cmd

ROWS = 250
BATCH_ROWS = 100  # three batches: lines 1, 101, 201


@pytest.fixture
def cluster(pg_dsn: str, ports_env: dict[str, str], tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(pg_dsn, "CREATE TABLE items (id bigint PRIMARY KEY, v text)", ports_env, tmp_path) as c:
        yield c


def run_send(cluster: Cluster, path: Path, *args: str) -> tuple[int, dict]:
    done = subprocess.run(
        zingest_cmd("send", str(path), "--table", "items", "--url", f"http://{cluster.host}:{cluster.port}",
                    "--batch-rows", str(BATCH_ROWS), "--json", "--quiet", "--timeout", "60", *args),
        env=child_env({}), capture_output=True, text=True, timeout=120, check=False)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def counts(dsn: str) -> tuple[int, int, int]:
    """(rows in items, distinct ids, dead letters of items)."""
    with psycopg.connect(dsn) as conn:
        rows, ids = conn.execute("SELECT count(*), count(DISTINCT id) FROM items").fetchone()
        (letters,) = conn.execute("SELECT count(*) FROM zingest.dead_letters WHERE table_name = 'items'").fetchone()
    return rows, ids, letters


def ledger_jobs(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute("SELECT job_id FROM zingest.ledger WHERE table_name = 'items'")}


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    path = tmp_path / "items.ndjson"
    path.write_text("".join(json.dumps({"id": i, "v": f"item {i}"}) + "\n" for i in range(1, ROWS + 1)))
    return path


def test_sending_a_file_again_under_the_same_key_lands_nothing_twice(cluster: Cluster, pg_dsn: str,
                                                                      items_file: Path) -> None:
    code, first = run_send(cluster, items_file, "--key", "items-2026-12-04")
    assert code == 0 and first["committed_rows"] == ROWS, first
    jobs = ledger_jobs(pg_dsn)
    assert len(jobs) == 3

    code, again = run_send(cluster, items_file, "--key", "items-2026-12-04")
    assert code == 0 and again["committed_rows"] == ROWS and again["failed_jobs"] == [], again
    assert first["replayed_rows"] == 0 and again["replayed_rows"] == ROWS
    assert counts(pg_dsn) == (ROWS, ROWS, 0)  # every row once, and not one dead letter
    assert ledger_jobs(pg_dsn) == jobs  # the retry was answered with the first jobs

    # Another prefix is another send: the primary key refuses every row, each kept as a dead letter.
    code, other = run_send(cluster, items_file, "--key", "another")
    assert code == 1 and other["committed_rows"] == 0 and len(other["failed_jobs"]) == 3, other
    assert counts(pg_dsn) == (ROWS, ROWS, ROWS)


@pytest.mark.parametrize("prefix", ["", "x" * 201, "clé", "tab\there"])
def test_a_key_prefix_the_gateway_could_not_take_is_a_usage_error(items_file: Path, prefix: str) -> None:
    done = subprocess.run(zingest_cmd("send", str(items_file), "--table", "items", "--url", "http://127.0.0.1:9",
                                      "--key", prefix),
                          env=child_env({}), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--key: expected 1 to 200 printable ASCII characters" in done.stderr
