"""Shared test fixtures: a real PostgreSQL, a fresh database per test, free ports, wait_until.

PostgreSQL is the server named by ``ZINGEST_TEST_DSN`` when it is set, otherwise
an embedded server started once per test session in a temporary folder.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from zingest.embedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres | None]:
    """The session's embedded server, or None when ZINGEST_TEST_DSN names another one."""
    if os.environ.get("ZINGEST_TEST_DSN"):
        yield None
        return
    # A folder of its own, not pytest's tmp_path: pytest prunes old numbered tmp folders, and a
    # concurrent pytest run could delete the data folder from under a running server.
    folder = Path(tempfile.mkdtemp(prefix="zingest-test-pg-"))
    server = EmbeddedPostgres(folder / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(embedded_pg: EmbeddedPostgres | None) -> str:
    """DSN of a PostgreSQL server for the whole session (its maintenance database)."""
    return embedded_pg.dsn if embedded_pg is not None else os.environ["ZINGEST_TEST_DSN"]


_db_numbers = itertools.count()


@pytest.fixture
def pg_dsn(pg_server: str) -> Iterator[str]:
    """DSN of a fresh, empty database of its own for one test; dropped afterwards."""
    name = f"zingest_test_{os.getpid()}_{next(_db_numbers)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(pg_server, dbname=name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def rides_dsn(pg_dsn: str) -> str:
    """A fresh database holding the demo rides table."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute((ROOT / "schema" / "rides.sql").read_text())
    return pg_dsn


def endpoints_env(folder: Path) -> dict[str, str]:
    """ZINGEST_* variables that put a gateway and its sinks on free loopback ports, journal in ``folder``."""
    http, push, status, metrics = free_port(), free_port(), free_port(), free_port()
    return {
        "ZINGEST_GATEWAY__JOURNAL_DIR": str(folder / "journal"),
        "ZINGEST_SINK__METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "ZINGEST_GATEWAY__LISTEN": f"127.0.0.1:{http}",
        "ZINGEST_GATEWAY__PUSH_BIND": f"tcp://127.0.0.1:{push}",
        "ZINGEST_GATEWAY__STATUS_BIND": f"tcp://127.0.0.1:{status}",
        "ZINGEST_SINK__PULL_CONNECT": f"tcp://127.0.0.1:{push}",
        "ZINGEST_SINK__STATUS_CONNECT": f"tcp://127.0.0.1:{status}",
    }


@pytest.fixture
def ports_env(tmp_path: Path) -> dict[str, str]:
    return endpoints_env(tmp_path)


@contextlib.contextmanager
def scratch_database(pg_server: str, name: str, *ddl: str) -> Iterator[str]:
    """A database of its own for a module (created fresh, DDL applied, dropped afterwards); yields its DSN."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(pg_server, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in ddl:
            conn.execute(statement)
    try:
        yield dsn
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def zingest_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "zingest", *args]


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZINGEST_")}
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then wait; kill (and fail loudly via the exit code) if it does not stop."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
