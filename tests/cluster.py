"""A gateway and sinks as real processes, a bounded load client, and the exactly-once check.

The table the fault tests load has no unique key on purpose: a row written
twice stays visible as two rows instead of being stopped by a constraint.
Each job carries a distinct ``batch`` number, so the check can count every
202'd job's rows and compare their checksum.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.conftest import child_env, stop_process, wait_until, zingest_cmd

EVENTS_DDL = "CREATE TABLE events (id bigint NOT NULL, batch integer NOT NULL, v text)"


def make_events_table(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(EVENTS_DDL)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: dict


class Cluster:
    """One gateway and N sinks started as `zingest gateway` / `zingest sink` subprocesses."""

    def __init__(self, env: dict[str, str], logs: Path, sinks: int = 2) -> None:
        self.env = env
        self.logs = logs
        self.host, _, port = env["ZINGEST_GATEWAY__LISTEN"].rpartition(":")
        self.port = int(port)
        self.gateway: subprocess.Popen | None = None
        self.sinks: list[subprocess.Popen | None] = [None] * sinks
        self._log_files: list = []
        self.started = 0

    def _spawn(self, role: str, env: dict[str, str]) -> subprocess.Popen:
        self.started += 1
        log = open(self.logs / f"{role}-{self.started}.log", "wb")
        self._log_files.append(log)
        return subprocess.Popen(zingest_cmd(role), env=child_env(env), stdout=log, stderr=subprocess.STDOUT)

    def start_gateway(self) -> None:
        self.gateway = self._spawn("gateway", self.env)

    def start_sink(self, i: int) -> None:
        # Each sink its own metrics port (or none): the configured one would clash.
        self.sinks[i] = self._spawn("sink", {**self.env, "ZINGEST_SINK__METRICS_LISTEN": ""})

    def start(self) -> Cluster:
        self.start_gateway()
        for i in range(len(self.sinks)):
            self.start_sink(i)
        self.wait_ready(len(self.sinks))
        return self

    def health(self) -> dict | None:
        try:
            r = self.request("GET", "/healthz", timeout=1)
        except OSError:
            return None
        return r.body if r.status == 200 else None

    def wait_ready(self, sinks: int, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.gateway is not None and self.gateway.poll() is None, self.log_text()
            h = self.health()
            return h is not None and h["sinks_connected"] >= sinks
        wait_until(ready, timeout, what=f"the gateway with {sinks} sinks connected")

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            ctype = resp.getheader("Content-Type", "")
            parsed = json.loads(data) if data and ctype.startswith("application/json") else {}
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed)
        finally:
            conn.close()

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/v1/jobs/{job_id}").body

    def metric(self, name: str) -> float:
        text = self.request_text("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"metric {name} not found")

    def request_text(self, path: str) -> str:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.logs.glob("*.log")))

    def stop(self) -> dict[str, int]:
        codes = {}
        if self.gateway is not None:
            codes["gateway"] = stop_process(self.gateway)
        for i, sink in enumerate(self.sinks):
            if sink is not None:
                codes[f"sink-{i}"] = stop_process(sink)
        for f in self._log_files:
            f.close()
        return codes


@contextlib.contextmanager
def running_cluster(dsn: str, ddl: str, env: dict[str, str], folder: Path, sinks: int = 1) -> Iterator[Cluster]:
    """``ddl`` applied to ``dsn``, then a gateway and ``sinks`` sinks on it (logs in ``folder/logs``), stopped after."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    cluster = Cluster({**env, "ZINGEST_DATABASE__DSN": dsn}, logs, sinks=sinks)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def job_body(batch: int, rows: int, pad: int = 0) -> bytes:
    first = batch * 1_000_000
    return b"\n".join(
        json.dumps({"id": first + i, "batch": batch, "v": f"b{batch}-r{i}" + "x" * pad}).encode()
        for i in range(rows)
    )


def checksum(batch: int, rows: int) -> int:
    first = batch * 1_000_000
    return sum(range(first, first + rows))


@dataclass
class Load:
    """Posts ``jobs`` NDJSON jobs of ``rows`` rows each, one at a time, from a thread.

    A 503 is retried after its Retry-After (bounded by ``deadline_s``); a request
    that gets no answer (the gateway died) is recorded as unknown: its rows may
    land at most once, but nothing was promised for them.
    """

    cluster: Cluster
    jobs: int
    rows: int
    deadline_s: float = 90.0
    pad: int = 0  # extra characters per row, to make jobs big
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/x-ndjson"})
    accepted: dict[int, str] = field(default_factory=dict)  # batch -> job id
    unknown: list[int] = field(default_factory=list)
    refused: int = 0
    retry_after_seen: set[str] = field(default_factory=set)
    thread: threading.Thread | None = None

    def run(self) -> None:
        end = time.monotonic() + self.deadline_s
        for batch in range(1, self.jobs + 1):
            body = job_body(batch, self.rows, self.pad)
            while time.monotonic() < end:
                try:
                    r = self.cluster.request("POST", "/v1/ingest/events", body, self.headers)
                except OSError:
                    self.unknown.append(batch)
                    # The gateway is gone; wait until it answers again (a fault test restarts it).
                    while time.monotonic() < end and self.cluster.health() is None:
                        time.sleep(0.05)
                    break
                if r.status == 202:
                    self.accepted[batch] = r.body["job_id"]
                    break
                assert r.status == 503, (r.status, r.body)
                self.refused += 1
                self.retry_after_seen.add(r.headers.get("retry-after", ""))
                time.sleep(min(float(r.headers.get("retry-after", "1")), 0.2))

    def start(self) -> Load:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(self.deadline_s + 30)
        assert not self.thread.is_alive(), "the load did not finish in time"


def assert_exactly_once(dsn: str, cluster: Cluster, load: Load, timeout: float = 90) -> None:
    """Every 202'd job reads committed and its rows are in the table exactly once; nothing else twice."""
    def all_final() -> bool:
        return all(cluster.job(job_id).get("state") == "committed" for job_id in load.accepted.values())
    wait_until(all_final, timeout, interval=0.2, what="every accepted job to read committed")
    with psycopg.connect(dsn) as conn:
        counts = dict(conn.execute(
            "SELECT batch, count(*) FROM events GROUP BY batch").fetchall())
        sums = dict(conn.execute("SELECT batch, sum(id) FROM events GROUP BY batch").fetchall())
        dup_ids = conn.execute("SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) > 1) d"
                               ).fetchone()[0]
    assert dup_ids == 0, f"{dup_ids} ids landed more than once"
    for batch in load.accepted:
        assert counts.get(batch) == load.rows, f"job {batch}: {counts.get(batch)} rows, expected {load.rows}"
        assert sums[batch] == checksum(batch, load.rows)
    # Rows of requests that got no answer may have landed (whole) or not at all, never in part.
    for batch in load.unknown:
        assert counts.get(batch, 0) in (0, load.rows)
    unexpected = set(counts) - set(load.accepted) - set(load.unknown)
    assert not unexpected, f"rows landed for jobs never sent: {sorted(unexpected)}"
