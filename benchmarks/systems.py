"""Each system under test as processes: start them, wait until they serve, say which to measure, stop them.

A system serves ``POST /v1/ingest/bench_rides`` on a loopback port. Which
processes count as "the system" (for CPU and peak RSS) is listed by
:meth:`System.processes`; PostgreSQL is measured apart, for every system alike.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.data import TABLE
from benchmarks.procs import Proc, free_port, http_json, spawn, wait_until
from benchmarks.redisctl import RedisServer

# Seconds a system may take to start and serve.
READY_TIMEOUT_S = 60.0
# Connections the naive service writes with (what a default-sized pool would hold).
NAIVE_CONNECTIONS = 8
# Worker processes of the original design.
REDIS_WORKERS = 2

_runs = itertools.count(1)


@dataclass(frozen=True)
class Env:
    """What systems need from the benchmark: the database, the Redis server, where to put files."""

    dsn: str
    work: Path
    redis: RedisServer | None


class System(ABC):
    """One system under test; ``key`` names it in results.json, ``label`` in the report."""

    key: str
    label: str
    group: str  # ceiling | naive | original | zingest
    fmt: str = "json"

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.port = 0
        self.logs = Path()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/ingest/{TABLE}"

    def start(self, env: Env) -> None:
        self.port = free_port()
        self.logs = env.work / "logs" / f"{next(_runs):02d}-{self.key}"
        self._start(env)
        wait_until(self._ready, READY_TIMEOUT_S, f"{self.label} to serve", self.procs)

    @abstractmethod
    def _start(self, env: Env) -> None: ...

    def _ready(self) -> bool:
        return http_json(f"http://127.0.0.1:{self.port}/healthz") is not None

    def processes(self) -> dict[str, psutil.Process]:
        return {p.name: psutil.Process(p.pid) for p in self.procs}

    def backlog(self) -> int | None:
        """Jobs accepted but not yet final, where the system can say so cheaply; None where it cannot."""
        return None

    def shared(self) -> frozenset[str]:
        """Processes in :meth:`processes` that were running before and may serve others (their RSS counts
        from the start of the run)."""
        return frozenset()

    def stop(self) -> dict[str, int]:
        """Stop every process (in start order); their exit codes."""
        codes = {p.name: p.stop() for p in self.procs}
        self.procs = []
        return codes

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.procs)


class Bare(System):
    key, label, group = "bare", "bare aiohttp (202, no work)", "ceiling"

    def _start(self, env: Env) -> None:
        self.procs.append(spawn("bare", ["-m", "benchmarks.servers.bare", "--port", str(self.port)], self.logs))


class Naive(System):
    key, label, group = "naive", "naive direct INSERT", "naive"

    def _start(self, env: Env) -> None:
        self.procs.append(spawn("naive", ["-m", "benchmarks.servers.naive", "--port", str(self.port), "--dsn",
                                          env.dsn, "--connections", str(NAIVE_CONNECTIONS)], self.logs))


class OriginalDesign(System):
    """aiohttp API → Redis list → 2 worker processes that BRPOP and INSERT."""

    key, label, group = "redis", "original design (Redis list + 2 workers)", "original"

    def __init__(self) -> None:
        super().__init__()
        self.queue = ""
        self._redis: RedisServer | None = None

    def _start(self, env: Env) -> None:
        assert env.redis is not None, "the original design needs a Redis server"
        self._redis = env.redis
        self.queue = f"zingest-bench:{psutil.Process().pid}:{self.logs.name}"
        common = ["--redis", env.redis.address, "--queue", self.queue]
        self.procs.append(spawn("api", ["-m", "benchmarks.servers.redisapi", "--port", str(self.port), *common],
                                self.logs))
        for i in range(1, REDIS_WORKERS + 1):
            self.procs.append(spawn(f"worker-{i}", ["-m", "benchmarks.servers.redisworker", "--dsn", env.dsn,
                                                    *common], self.logs))

    def processes(self) -> dict[str, psutil.Process]:
        procs = super().processes()
        server = self._redis.process() if self._redis is not None else None
        if server is not None:
            procs["redis-server"] = server
        return procs

    def shared(self) -> frozenset[str]:
        running_before = self._redis is not None and self._redis.started is None
        return frozenset({"redis-server"}) if running_before else frozenset()

    def backlog(self) -> int | None:
        """Jobs still waiting in the list (a job a worker has popped is not counted)."""
        if self._redis is None:
            return None
        with self._redis.client() as c:
            return int(c.llen(self.queue))

    def stop(self) -> dict[str, int]:
        codes = super().stop()
        if self._redis is not None:
            with self._redis.client() as c:
                c.delete(self.queue)
        return codes


class Zingest(System):
    """``zingest gateway`` and N ``zingest sink`` processes, configured through ZINGEST_* variables only."""

    group = "zingest"

    def __init__(self, sinks: int, durability: str, fmt: str = "json") -> None:
        super().__init__()
        self.sinks, self.durability, self.fmt = sinks, durability, fmt
        lane = "" if fmt == "json" else f"-{fmt}"
        self.key = f"zingest-{durability}-{sinks}{lane}"
        self.label = f"zingest {durability}, {sinks} sink{'s' if sinks > 1 else ''}" + (
            f", {fmt.upper()} lane" if fmt != "json" else "")

    def _start(self, env: Env) -> None:
        push, status = free_port(), free_port()
        cfg = {
            "ZINGEST_DATABASE__DSN": env.dsn,
            "ZINGEST_GATEWAY__LISTEN": f"127.0.0.1:{self.port}",
            "ZINGEST_GATEWAY__PUSH_BIND": f"tcp://127.0.0.1:{push}",
            "ZINGEST_GATEWAY__STATUS_BIND": f"tcp://127.0.0.1:{status}",
            "ZINGEST_GATEWAY__DURABILITY": self.durability,
            "ZINGEST_GATEWAY__JOURNAL_DIR": str(self.logs / "journal"),
            "ZINGEST_SINK__PULL_CONNECT": f"tcp://127.0.0.1:{push}",
            "ZINGEST_SINK__STATUS_CONNECT": f"tcp://127.0.0.1:{status}",
            "ZINGEST_SINK__METRICS_LISTEN": "",
        }
        self.procs.append(spawn("gateway", ["-m", "zingest", "gateway"], self.logs, cfg))
        for i in range(1, self.sinks + 1):
            self.procs.append(spawn(f"sink-{i}", ["-m", "zingest", "sink"], self.logs, cfg))

    def _ready(self) -> bool:
        health = http_json(f"http://127.0.0.1:{self.port}/healthz")
        return health is not None and health.get("sinks_connected", 0) >= self.sinks

    def backlog(self) -> int | None:
        """Jobs the gateway holds that are not final yet (its /healthz ``pending_jobs``)."""
        health = http_json(f"http://127.0.0.1:{self.port}/healthz")
        return None if health is None else int(health.get("pending_jobs", 0))
