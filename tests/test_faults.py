"""Fault tests: real `zingest gateway` and `zingest sink` processes, a real PostgreSQL, loads that end.

Each test drives a bounded load, injects one kind of fault, then checks that
every job that got a 202 reads `committed` and that its rows are in the table
exactly once (count and checksum per job).
"""

from __future__ import annotations

import http.client
import signal
from pathlib import Path

import psycopg
import pytest

from tests.cluster import (
    Cluster,
    Load,
    assert_exactly_once,
    job_body,
    make_events_table,
)
from tests.conftest import wait_until
from zingest.embedded import EmbeddedPostgres

# Small loads: the whole file stays well inside a minute or two on two cores.
JOBS = 120
ROWS = 50


@pytest.fixture
def cluster_env(pg_dsn: str, ports_env: dict[str, str]) -> dict[str, str]:
    make_events_table(pg_dsn)
    return {
        **ports_env,
        "ZINGEST_DATABASE__DSN": pg_dsn,
        "ZINGEST_GATEWAY__REDELIVERY_TIMEOUT_S": "2",
        "ZINGEST_SINK__BATCH_ROWS": "500",
    }


@pytest.fixture
def cluster(cluster_env: dict[str, str], tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(cluster_env, logs, sinks=2)
    try:
        yield c.start()
    finally:
        c.stop()


def test_sinks_killed_repeatedly_lose_and_double_nothing(cluster: Cluster, pg_dsn: str) -> None:
    load = Load(cluster, JOBS, ROWS).start()
    for kill in range(3):
        wait_until(lambda k=kill: len(load.accepted) >= (k + 1) * JOBS // 4 or not load.thread.is_alive(),
                   30, what="the load to make progress")
        victim = cluster.sinks[kill % 2]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        cluster.start_sink(kill % 2)
    load.join()
    assert len(load.accepted) == JOBS and not load.unknown
    assert_exactly_once(pg_dsn, cluster, load)


def test_postgres_fast_restart_during_load(cluster: Cluster, pg_dsn: str,
                                           embedded_pg: EmbeddedPostgres | None) -> None:
    if embedded_pg is None:
        pytest.skip("restarts PostgreSQL: needs the embedded test server, not ZINGEST_TEST_DSN")
    load = Load(cluster, JOBS, ROWS).start()
    wait_until(lambda: len(load.accepted) >= JOBS // 3, 30, what="the load to make progress")
    embedded_pg.restart()
    load.join()
    assert len(load.accepted) == JOBS
    assert_exactly_once(pg_dsn, cluster, load)
    # The sinks saw their connections cut and retried the batch rather than failing jobs.
    assert "database unavailable" in cluster.log_text()


def test_gateway_killed_and_restarted_keeps_every_accepted_job(cluster: Cluster, pg_dsn: str) -> None:
    # Big jobs (~200 kB): more than the kernel's socket buffers between gateway and sinks can hold.
    load = Load(cluster, JOBS, ROWS, pad=4000).start()
    wait_until(lambda: len(load.accepted) >= JOBS // 3, 30, what="the load to make progress")
    # Hang the sinks so that accepted jobs pile up inside the gateway (its send queues), where
    # only the journal keeps them when the gateway dies. In "memory" mode this test fails.
    for sink in cluster.sinks:
        sink.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: len(load.accepted) >= 2 * JOBS // 3, 30, what="jobs to pile up in the gateway")
        cluster.gateway.send_signal(signal.SIGKILL)
        cluster.gateway.wait(10)
    finally:
        for sink in cluster.sinks:
            sink.send_signal(signal.SIGCONT)
    cluster.start_gateway()
    cluster.wait_ready(len(cluster.sinks))
    load.join()
    assert len(load.accepted) + len(load.unknown) == JOBS
    assert_exactly_once(pg_dsn, cluster, load)
    assert "to send again" in cluster.log_text()


def test_sinks_gone_means_503_with_retry_after_and_nothing_lost(cluster: Cluster, pg_dsn: str) -> None:
    for sink in cluster.sinks:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(30) == 0
    wait_until(lambda: cluster.health()["sinks_connected"] == 0, 10, what="the gateway to see no sink")
    r = cluster.request("POST", "/v1/ingest/events", job_body(1, 3), {"Content-Type": "application/x-ndjson"})
    assert r.status == 503 and r.headers["retry-after"] == "1"
    assert "no sink" in r.body["error"]

    load = Load(cluster, 40, ROWS, deadline_s=60).start()
    wait_until(lambda: load.refused >= 3, 10, what="the client to be refused a few times")
    for i in range(len(cluster.sinks)):
        cluster.start_sink(i)
    load.join()
    assert len(load.accepted) == 40 and load.retry_after_seen == {"1"}
    assert_exactly_once(pg_dsn, cluster, load)


def test_hung_sinks_fill_the_bounded_buffer_then_503(cluster_env: dict[str, str], tmp_path: Path,
                                                     pg_dsn: str) -> None:
    env = {**cluster_env, "ZINGEST_GATEWAY__MAX_PENDING_ROWS": "1000", "ZINGEST_GATEWAY__SEND_HWM": "2",
           "ZINGEST_SINK__RECV_HWM": "2"}
    logs = tmp_path / "hung"
    logs.mkdir()
    cluster = Cluster(env, logs, sinks=1).start()
    try:
        sink = cluster.sinks[0]
        sink.send_signal(signal.SIGSTOP)  # connected but taking nothing
        load = Load(cluster, 60, ROWS, deadline_s=60).start()
        wait_until(lambda: load.refused >= 5, 20, what="the gateway to refuse work once full")
        pending = cluster.metric("zingest_gateway_pending_rows")
        assert pending <= 1000 + ROWS, f"{pending} rows held past the bound"
        sink.send_signal(signal.SIGCONT)
        load.join()
        assert len(load.accepted) == 60
        assert_exactly_once(pg_dsn, cluster, load)
    finally:
        cluster.sinks[0].send_signal(signal.SIGCONT)
        cluster.stop()


def test_idempotency_key_retry_returns_the_first_job(cluster: Cluster, pg_dsn: str) -> None:
    headers = {"Content-Type": "application/x-ndjson", "Idempotency-Key": "order-42"}
    for sink in cluster.sinks:
        sink.send_signal(signal.SIGSTOP)  # the first attempt stays pending: the client "times out"
    try:
        first = cluster.request("POST", "/v1/ingest/events", job_body(7, 5), headers)
        assert first.status == 202
        retry = cluster.request("POST", "/v1/ingest/events", job_body(7, 5), headers)
        assert retry.status == 202 and retry.headers.get("idempotent-replayed") == "true"
        assert retry.body["job_id"] == first.body["job_id"]
    finally:
        for sink in cluster.sinks:
            sink.send_signal(signal.SIGCONT)
    done = cluster.request("POST", "/v1/ingest/events?wait=true", job_body(7, 5), headers, timeout=30)
    assert done.status == 200 and done.body["job_id"] == first.body["job_id"]
    assert done.body["state"] == "committed"

    # After a gateway restart the key is answered from the ledger.
    cluster.gateway.send_signal(signal.SIGTERM)
    assert cluster.gateway.wait(30) == 0
    cluster.start_gateway()
    cluster.wait_ready(len(cluster.sinks))
    again = cluster.request("POST", "/v1/ingest/events", job_body(7, 5), headers)
    assert again.status == 202 and again.body["job_id"] == first.body["job_id"]
    load = Load(cluster, 0, 5)
    load.accepted[7] = first.body["job_id"]
    assert_exactly_once(pg_dsn, cluster, load)


def test_wait_true_answers_200_when_final_and_504_when_not(cluster_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cluster_env, "ZINGEST_GATEWAY__WAIT_TIMEOUT_S": "0.5"}
    logs = tmp_path / "wait"
    logs.mkdir()
    cluster = Cluster(env, logs, sinks=1).start()
    try:
        headers = {"Content-Type": "application/x-ndjson"}
        r = cluster.request("POST", "/v1/ingest/events?wait=true", job_body(1, 3), headers)
        assert r.status == 200 and r.body["state"] == "committed" and r.body["rows"] == 3
        cluster.sinks[0].send_signal(signal.SIGSTOP)
        r = cluster.request("POST", "/v1/ingest/events?wait=true", job_body(2, 3), headers)
        assert r.status == 504 and r.body["state"] == "accepted"
        cluster.sinks[0].send_signal(signal.SIGCONT)
        wait_until(lambda: cluster.job(r.body["job_id"])["state"] == "committed", 20,
                   what="the 504'd job to commit once the sink resumes")
    finally:
        cluster.sinks[0].send_signal(signal.SIGCONT)
        codes = cluster.stop()
    assert set(codes.values()) == {0}, codes


def test_a_stopping_gateway_refuses_new_jobs_on_open_connections(cluster_env: dict[str, str], tmp_path: Path,
                                                                 pg_dsn: str) -> None:
    """While it drains, a gateway answers a request on a keep-alive connection 503 and closes it:
    no job is accepted that the stop could then leave behind."""
    logs = tmp_path / "stopping"
    logs.mkdir()
    cluster = Cluster(cluster_env, logs, sinks=1).start()
    conn = http.client.HTTPConnection(cluster.host, cluster.port, timeout=10)
    headers = {"Content-Type": "application/x-ndjson"}

    def post(batch: int) -> http.client.HTTPResponse:
        conn.request("POST", "/v1/ingest/events", body=job_body(batch, 3), headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp

    try:
        assert post(1).status == 202
        cluster.sinks[0].send_signal(signal.SIGSTOP)  # job 2 stays pending, so the gateway drains
        assert post(2).status == 202
        cluster.gateway.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping: no new requests" in cluster.log_text(), 10, what="the gateway to stop intake")
        refused = post(3)  # the same connection, still open
        assert refused.status == 503
        assert refused.getheader("Connection", "").lower() == "close"
        assert refused.getheader("Retry-After") is not None
        cluster.sinks[0].send_signal(signal.SIGCONT)
        assert cluster.gateway.wait(30) == 0
        with psycopg.connect(pg_dsn) as db:
            wait_until(lambda: db.execute("SELECT count(*) FROM events").fetchone()[0] == 6, 20,
                       what="the two accepted jobs to land")
            assert dict(db.execute("SELECT batch, count(*) FROM events GROUP BY batch").fetchall()) == {1: 3, 2: 3}
    finally:
        conn.close()
        cluster.sinks[0].send_signal(signal.SIGCONT)
        cluster.stop()
