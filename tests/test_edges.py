"""Edges a break-it review found, against a real gateway and sink and a real PostgreSQL.

* values Python reads but PostgreSQL does not are refused with 400 before a job
  exists (they used to be accepted and then become dead letters);
* arrays whose elements JSON mixes (``[1, 2.5]`` for ``float8[]``) land;
* a GENERATED ALWAYS identity column cannot be written (COPY would store it);
* request edges: two Idempotency-Key headers, ``?wait`` words, a job id in
  capitals, a UTF-8 byte order mark;
* a body that never arrives gets 408, and bodies in flight are bounded (503);
* with its database gone, a request with a column fault is still answered 400
  from the catalog at hand, never 500.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.cluster import Cluster, Response
from gateway.db import QUERY_TIMEOUT_S, REFRESH_MIN_S
from tests.conftest import endpoints_env, scratch_database, wait_until

MAX_BODY = 100_000
MAX_INFLIGHT = 60_000
BODY_TIMEOUT_S = 1.5
JSON = {"Content-Type": "application/json"}

DDL = """
CREATE TABLE edges (
    id  integer,
    f8  double precision,
    f4  real,
    u   uuid,
    ts  timestamptz,
    fa  double precision[],
    ia  bigint[],
    ja  jsonb[],
    tag text
);
CREATE TABLE exact_edges (id integer, n numeric, na numeric[], fa double precision[], ja jsonb[]);
CREATE TABLE idents (id integer GENERATED ALWAYS AS IDENTITY, v text);
"""


@pytest.fixture(scope="module")
def dsn(pg_server: str) -> Iterator[str]:
    with scratch_database(pg_server, f"zingest_edges_{os.getpid()}", DDL) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def gw(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("edges")
    (folder / "logs").mkdir()
    env = {**endpoints_env(folder), "ZINGEST_DATABASE__DSN": dsn,
           "ZINGEST_GATEWAY__MAX_BODY_BYTES": str(MAX_BODY),
           "ZINGEST_GATEWAY__MAX_INFLIGHT_BYTES": str(MAX_INFLIGHT),
           "ZINGEST_GATEWAY__BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
           "ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "1"}
    cluster = Cluster(env, folder / "logs", sinks=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def post(gw: Cluster, table: str, body: Any, headers: dict[str, str] | None = None, query: str = "") -> Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return gw.request("POST", f"/v1/ingest/{table}{query}", data, headers or JSON)


def committed(gw: Cluster, r: Response) -> dict:
    assert r.status == 202, (r.status, r.body)
    job = wait_until(lambda: (j := gw.job(r.body["job_id"]))["state"] != "accepted" and j, 15,
                     what="the job to become final")
    assert job["state"] == "committed", json.dumps(job)
    return job


def accepted(gw: Cluster) -> float:
    return gw.metric("zingest_gateway_jobs_accepted_total")


# --- values Python reads and PostgreSQL does not: 400 before a job exists ---------------------------

REFUSED = [
    ("edges", "id", "\u0664\u0662", "expected an integer"),  # Arabic-Indic digits: int() reads them
    ("edges", "f8", "1_000.5", "expected a number"),
    ("edges", "f8", "1e400", "out of range for double precision"),
    ("edges", "f8", "1e-400", "too close to zero"),
    ("edges", "f4", 1e39, "out of range for real"),
    ("edges", "f4", 1e-50, "too close to zero"),
    ("edges", "u", "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "is not a uuid"),
    ("edges", "u", "a0eebc99-9c0b-4ef8-bb6d-6b-b-9-b-d380a11", "is not a uuid"),
    ("edges", "ts", "2013-01-01T09:00:00+16:00", "offsets up to 15:59"),
    ("exact_edges", "n", "sNaN", "is not a number"),
    ("exact_edges", "n", "1_000", "is not a number"),
    ("exact_edges", "n", "1.5e-16383", "out of range for numeric"),
    ("exact_edges", "fa", [1e400], "out of range for double precision"),
    ("exact_edges", "ja", [{"a": 1e400}], "cannot be stored as JSON"),  # json keeps double precision
    ("idents", "id", 7, "GENERATED ALWAYS AS IDENTITY"),
]


@pytest.mark.parametrize("table, column, value, says", REFUSED,
                         ids=[f"{t}.{c}={v!r:.30}" for t, c, v, _ in REFUSED])
def test_values_postgresql_would_refuse_are_400_naming_row_and_column(gw: Cluster, table: str, column: str,
                                                                    value: Any, says: str) -> None:
    before = accepted(gw)
    body = b'[{"id": 1}, {"id": 2, "%s": %s}]' % (column.encode(), json.dumps(value).encode()) \
        if table != "idents" else b'[{"v": "a"}, {"v": "b", "id": 7}]'
    if value == [1e400]:
        body = b'[{"id": 1}, {"id": 2, "fa": [1e400]}]'  # exact tables read JSON numbers exactly
    if value == [{"a": 1e400}]:
        body = b'[{"id": 1}, {"id": 2, "ja": [{"a": 1e400}]}]'
    r = post(gw, table, body)
    assert r.status == 400, (r.status, r.body)
    assert r.body["index"] == 1 and r.body["column"] == column and says in r.body["error"], r.body
    assert accepted(gw) == before  # no job was made


def test_values_at_the_edges_postgresql_takes_still_land(gw: Cluster, dsn: str) -> None:
    rows = [{"id": 10, "f8": "1e308", "f4": 3.0e38, "u": "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
             "ts": "2013-01-01T09:00:00+15:59", "tag": "edge-ok"},
            {"id": 11, "f8": " -Infinity ", "f4": "NaN", "u": "A0EE-BC99-9C0B-4EF8-BB6D-6BB9-BD38-0A11",
             "ts": "2013-01-01T09:00:00-15:59", "tag": "edge-ok"}]
    committed(gw, post(gw, "edges", rows))
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT id, f8, f4::text, u::text, extract(epoch FROM ts)::bigint FROM edges"
                           " WHERE tag = 'edge-ok' ORDER BY id").fetchall()
    assert got == [(10, 1e308, "3e+38", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", epoch(rows[0]["ts"])),
                   (11, float("-inf"), "NaN", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", epoch(rows[1]["ts"]))]


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


# --- arrays whose elements JSON mixes ---------------------------------------------------------------


def test_arrays_of_mixed_json_types_land_as_sent(gw: Cluster, dsn: str) -> None:
    row = {"id": 20, "fa": [1, 2.5, None], "ia": [1, "2", None, " 3 "], "ja": [{"a": 1}, "text", 2, True, None],
           "tag": "mixed-arrays"}
    committed(gw, post(gw, "edges", [row]))
    committed(gw, post(gw, "exact_edges", b'[{"id": 21, "na": [1.5, 2, "3.25"], "fa": [1, 2.5],'
                                          b' "ja": [1.5, {"b": 2.25}, "text"]}]'))
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT fa, ia, ja FROM edges WHERE tag = 'mixed-arrays'").fetchall() == [
            ([1.0, 2.5, None], [1, 2, None, 3], [{"a": 1}, "text", 2, True, None])]
        assert conn.execute("SELECT na, fa, ja FROM exact_edges WHERE id = 21").fetchall() == [
            ([Decimal("1.5"), Decimal("2"), Decimal("3.25")], [1.0, 2.5], [1.5, {"b": 2.25}, "text"])]


# --- request edges -----------------------------------------------------------------------------------


def test_two_idempotency_keys_are_400(gw: Cluster) -> None:
    conn = socket.create_connection((gw.host, gw.port), timeout=10)
    body = b'{"id": 30}'
    with conn:
        conn.sendall(b"POST /v1/ingest/edges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Idempotency-Key: a\r\nIdempotency-Key: b\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"more than one Idempotency-Key" in answer


@pytest.mark.parametrize("word, status", [("TRUE", 200), ("yes", 200), ("1", 200), ("False", 202),
                                          ("no", 202), ("maybe", 400), ("", 400)])
def test_wait_words(gw: Cluster, word: str, status: int) -> None:
    r = post(gw, "edges", {"id": 31, "tag": f"wait-{word}"}, query=f"?wait={word}")
    assert r.status == status, (r.status, r.body)
    if status == 400:
        assert "wait must be true or false" in r.body["error"]


def test_wait_given_twice_is_400(gw: Cluster) -> None:
    before = accepted(gw)
    r = post(gw, "edges", {"id": 31, "tag": "wait-twice"}, query="?wait=true&wait=false")
    assert r.status == 400 and "wait is given more than once" in r.body["error"], (r.status, r.body)
    assert accepted(gw) == before


def test_a_job_id_in_capitals_is_the_same_job(gw: Cluster) -> None:
    job = committed(gw, post(gw, "edges", {"id": 32, "tag": "caps"}))
    assert gw.job(job["job_id"].upper())["job_id"] == job["job_id"]


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b'\xef\xbb\xbf[{"id": 33, "tag": "bom"}]'),
    ("application/x-ndjson", b'\xef\xbb\xbf{"id": 34, "tag": "bom"}\n'),
])
def test_a_utf8_byte_order_mark_is_skipped(gw: Cluster, content_type: str, body: bytes) -> None:
    committed(gw, post(gw, "edges", body, {"Content-Type": content_type}))


# --- bodies in flight ---------------------------------------------------------------------------------


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def slow_post(gw: Cluster, length: int, sent: bytes) -> socket.socket:
    """A POST announcing ``length`` bytes of body that sends only ``sent``, then nothing."""
    conn = socket.create_connection((gw.host, gw.port), timeout=BODY_TIMEOUT_S + 10)
    conn.sendall(b"POST /v1/ingest/edges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (length, sent))
    return conn


BODY = json.dumps([{"id": 40, "tag": "x" * 100}] * 150).encode()  # about 20,000 bytes


def test_a_body_that_does_not_arrive_is_408_and_bodies_in_flight_are_bounded(gw: Cluster) -> None:
    # Sends 45,000 of its 50,000 bytes and stalls: it holds 45,000 of the gateway's 60,000.
    with slow_post(gw, 50_000, b"[" + b" " * 44_999) as slow:
        busy = wait_until(lambda: (r := post(gw, "edges", BODY)).status == 503 and r, BODY_TIMEOUT_S,
                          what="a 503 while the slow body holds the in-flight bytes")
        assert busy.headers.get("retry-after") == "1" and "max_inflight_bytes" in busy.body["error"]
        answer = _read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"gateway.body_timeout_s" in answer
    committed(gw, post(gw, "edges", BODY))  # once the slow request is gone, the same body is taken


def test_an_announced_body_holds_only_what_has_arrived(gw: Cluster) -> None:
    """Idle connections announcing large bodies must not lock everyone else out."""
    idle = [slow_post(gw, MAX_BODY - 10, b"[") for _ in range(4)]
    try:
        committed(gw, post(gw, "edges", BODY))
    finally:
        for conn in idle:
            conn.close()


# --- the database gone ---------------------------------------------------------------------------------


def test_database_gone_a_column_fault_is_still_400(pg_server: str, tmp_path: Path) -> None:
    name = f"zingest_edges_gone_{os.getpid()}"
    with scratch_database(pg_server, name, "CREATE TABLE t (id integer)") as dsn:
        (tmp_path / "logs").mkdir()
        cluster = Cluster({**endpoints_env(tmp_path), "ZINGEST_DATABASE__DSN": dsn,
                           "ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "0"}, tmp_path / "logs", sinks=1)
        cluster.start()
        try:
            with psycopg.connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

            def answered_from_the_catalog_at_hand() -> bool:
                for body in (b'{"id": "x"}', b'{"id": 1, "nope": 1}'):
                    r = post(cluster, "t", body)
                    assert r.status == 400 and r.body["column"] in ("id", "nope"), (r.status, r.body)
                return "catalog re-read failed" in cluster.log_text()

            wait_until(answered_from_the_catalog_at_hand, 15, interval=0.2,
                       what="a catalog re-read to fail while every answer stays 400")
        finally:
            cluster.stop()


class Proxy:
    """A TCP proxy in front of PostgreSQL that can turn into a black hole: connections accepted and
    held, bytes never forwarded (a server that is up but does not answer, as behind a partition)."""

    def __init__(self, dsn: str) -> None:
        info = conninfo_to_dict(dsn)
        host, port = info.get("host") or "127.0.0.1", int(info.get("port") or 5432)
        self.target = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}") if host.startswith("/") else \
            (socket.AF_INET, (host, port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.black_hole = threading.Event()
        self.closed = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.socket(self.target[0])
            server.connect(self.target[1])
            self.held += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self.closed.is_set():
            if self.black_hole.is_set():
                self.closed.wait(0.1)  # hold everything, forward nothing
                continue
            ready, _, _ = select.select(list(peers), [], [], 0.1)
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                peers[s].sendall(data)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for s in self.held:
            s.close()


def test_a_database_that_never_answers_costs_a_request_seconds_not_for_ever(pg_server: str,
                                                                            tmp_path: Path) -> None:
    name = f"zingest_edges_hole_{os.getpid()}"
    with scratch_database(pg_server, name, "CREATE TABLE t (id integer)") as dsn:
        proxy = Proxy(dsn)
        (tmp_path / "logs").mkdir()
        via_proxy = make_conninfo(dsn, host="127.0.0.1", port=str(proxy.port))
        cluster = Cluster({**endpoints_env(tmp_path), "ZINGEST_DATABASE__DSN": via_proxy,
                           "ZINGEST_GATEWAY__MAX_INFLIGHT_BYTES": "1000",
                           "ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "0"}, tmp_path / "logs", sinks=0)
        try:
            cluster.start()  # serving: its catalog was read before this returned
            served = time.monotonic()
            proxy.black_hole.set()
            # Past REFRESH_MIN_S since that read, so that the bad value below makes a catalog re-read.
            # (Counted from the proxy's start instead, a slow start-up left the window still shut.)
            wait_until(lambda: time.monotonic() - served > REFRESH_MIN_S + 0.2, 5, interval=0.1)
            # A bad value makes the gateway re-read the catalog, which now never answers. Four at once
            # take their turns on the gateway's one connection: they wait out one timeout, not one each.
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda _: post(cluster, "t", b'{"id": "z"}'), range(4)))
            assert [(a.status, a.body["column"]) for a in answers] == [(400, "id")] * 4, answers
            assert time.monotonic() - started < QUERY_TIMEOUT_S + 3
            # The gateway still serves, and each request's in-flight bytes were given back.
            for fill in (b"x", b"y"):
                r = post(cluster, "t", b'{"id": "' + fill * 900 + b'"}')
                assert r.status == 400 and r.body["column"] == "id", (r.status, r.body)
            r = cluster.request("GET", "/v1/jobs/" + "0" * 32, timeout=QUERY_TIMEOUT_S + 5)
            assert r.status == 503 and "ledger cannot be reached" in r.body["error"], (r.status, r.body)
            assert "catalog re-read failed (the database did not answer" in cluster.log_text()
        finally:
            cluster.stop()
            proxy.close()
