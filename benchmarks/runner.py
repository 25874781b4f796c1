"""One measurement: a system and a request size, from start to verified rows to stop.

For an HTTP system (:meth:`Runner.http_case`):

1. start its processes and wait until it serves; a short warm-up load (discarded);
2. **max**: closed loop at a fixed concurrency for ``max_s``; wait until every
   acknowledged row is in PostgreSQL; check count, distinct ids and id checksum;
   CPU of the system's processes and of PostgreSQL from before the load to the
   last row landed;
3. **half**: open loop at half the maximum it sustained (the lower of requests
   acknowledged and rows committed per second) for ``half_s``; the same check;
   commit latency from ``landed_at - sent_at`` in SQL;
4. stop it. Peak RSS is sampled throughout.

A run whose rows do not match what was acknowledged is FAILED and its
figures are kept only to explain the failure, never ranked.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psutil
from tqdm import tqdm

from benchmarks.db import Database
from benchmarks.procs import Monitor, Proc, StartError, TreeCpu, spawn
from benchmarks.systems import Env, System
from common.config import SinkConfig

MIB = 1024 * 1024
# How often a system's own queue is looked at while rows land (seconds).
BACKLOG_POLL_S = 0.05
# Seconds past a load's own bound before the benchmark kills its process.
KILL_MARGIN_S = 90.0
OK, FAILED, SKIPPED = "ok", "FAILED", "skipped"


@dataclass(frozen=True)
class Timing:
    """How long and how hard each phase runs (the plan's knobs)."""

    max_s: float
    half_s: float
    warmup_requests: int
    land_stall_s: float  # landing gives up after this long without a new row
    concurrency: dict[int, int]  # request size -> closed-loop concurrency
    max_requests: dict[int, int]  # request size -> bound on requests per phase
    copy_max_rows: int


class Events:
    """JSON-line events from the stdout of child processes, read on one thread per process."""

    def __init__(self, procs: list[Proc]) -> None:
        self.q: queue.Queue[tuple[str, dict[str, Any] | None]] = queue.Queue()
        for p in procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, p: Proc) -> None:
        assert p.popen.stdout is not None
        for line in p.popen.stdout:
            try:
                self.q.put((p.name, orjson.loads(line)))
            except orjson.JSONDecodeError:
                continue
        self.q.put((p.name, None))

    def get(self, timeout: float) -> tuple[str, dict[str, Any] | None]:
        return self.q.get(timeout=timeout)


def bar(**kwargs: Any) -> tqdm:
    """A progress bar on stderr; redrawn rarely when stderr is not a terminal (CI logs)."""
    tty = sys.stderr.isatty()
    if not tty and kwargs.get("position"):
        kwargs["disable"] = True  # a log gets the overall bar only
    return tqdm(dynamic_ncols=True, mininterval=0.1 if tty else 10.0, **kwargs)


def machine_share(before: Any, after: Any, ours: float, wall_s: float) -> dict[str, float]:
    """The whole machine's CPU over ``wall_s`` seconds, in CPU seconds: in processes, in interrupts
    (loopback networking runs there, charged to no process), stolen by the hypervisor, idle, and in
    processes other than the system, PostgreSQL, the load generator and the benchmark (other work)."""

    def delta(*fields: str) -> float:
        return sum(getattr(after, f) - getattr(before, f) for f in fields if hasattr(after, f))

    processes = delta("user", "nice", "system")
    return {"wall_s": wall_s, "processes_s": processes, "interrupts_s": delta("irq", "softirq"),
            "steal_s": delta("steal"), "idle_s": delta("idle", "iowait"), "other_s": max(0.0, processes - ours)}


def per_100k(seconds: float | None, rows: int) -> float | None:
    return None if seconds is None or rows <= 0 else seconds / rows * 100_000


class Runner:
    def __init__(self, db: Database, env: Env, timing: Timing) -> None:
        self.db, self.env, self.timing = db, env, timing

    def _trees(self) -> list[TreeCpu]:
        return [] if self.db.cpu is None else [self.db.cpu]

    def _pg_cpu(self) -> float | None:
        return None if self.db.cpu is None else self.db.cpu.total()

    # --- loads --------------------------------------------------------------------------------

    def load(self, system: System, size: int, mode: str, duration: float, max_requests: int,
             concurrency: int = 1, rate: float = 0.0, desc: str = "") -> dict[str, Any]:
        args = ["-m", "benchmarks.load", "--url", system.url, "--format", system.fmt, "--size", str(size),
                "--mode", mode, "--duration", f"{duration:g}", "--max-requests", str(max_requests),
                "--concurrency", str(concurrency), "--rate", f"{rate:.3f}"]
        proc = spawn(f"load-{mode}-{size}", args, system.logs, stdout=subprocess.PIPE)
        watchdog = threading.Timer(duration + KILL_MARGIN_S, proc.popen.kill)
        watchdog.start()
        result: dict[str, Any] | None = None
        total = int(rate * duration) if mode == "open" else None
        try:
            with bar(total=total, desc=desc, unit="req", position=1, leave=False) as progress:
                events = Events([proc])
                while True:
                    _, event = events.get(timeout=duration + KILL_MARGIN_S + 10)
                    if event is None:
                        break
                    if event["event"] == "progress":
                        progress.update(event["requests"] - progress.n)
                    elif event["event"] == "result":
                        result = event
        finally:
            watchdog.cancel()
            code = proc.stop()
        if result is None:
            raise StartError(f"the load generator exited with {code} without a result:\n{proc.log_tail()}")
        return result

    def land(self, system: System, expected: int, desc: str) -> int:
        """Wait until ``expected`` rows are in the table: first on the system's own queue (a cheap look),
        then on count(*) (a full scan, so it comes last), each until done or stalled."""
        backlog = system.backlog()
        if backlog:
            with bar(total=backlog, desc=f"{desc}: queued", unit="job", position=1, leave=False) as progress:
                last, last_change = backlog, time.monotonic()
                while backlog and time.monotonic() - last_change < self.timing.land_stall_s:
                    time.sleep(BACKLOG_POLL_S)
                    backlog = system.backlog() or 0
                    progress.update(progress.total - backlog - progress.n)
                    if backlog != last:
                        last, last_change = backlog, time.monotonic()
        with bar(total=expected, desc=desc, unit="row", position=1, leave=False) as progress:
            return self.db.wait_landed(expected, self.timing.land_stall_s, lambda n: progress.update(n - progress.n))

    def check(self, system: System, load: dict[str, Any], verify_rows: bool,
              desc: str) -> tuple[dict[str, Any], str | None]:
        """Wait for the acknowledged rows and compare; the landed figures and the problem, if any."""
        problem = None
        if load["errors"]:
            problem = f"{load['errors']} requests failed (first: {load['error_sample']})"
        if not verify_rows:
            return {}, problem
        self.land(system, load["rows_ok"], desc)
        landed = self.db.landed(load["rows_ok"], load["id_sum"])
        span = landed.commit_seconds
        figures = {"rows_landed": landed.rows, "commit_span_s": span,
                   "rows_per_s_committed": landed.rows / span if span and landed.ok else None}
        return figures, problem or landed.problem()

    # --- cases --------------------------------------------------------------------------------

    def http_case(self, system: System, size: int) -> dict[str, Any]:
        t = self.timing
        verify = system.group != "ceiling"
        started = time.monotonic()
        out: dict[str, Any] = {"system": system.key, "label": system.label, "group": system.group, "size": size,
                               "format": system.fmt, "status": OK, "problem": None}
        try:
            system.start(self.env)
            procs = system.processes()
            out["processes"] = sorted(procs)
            with Monitor(procs, trees=self._trees(), shared=system.shared()) as mon:
                warm = self.load(system, size, "closed", 10, t.warmup_requests, t.concurrency[size],
                                 desc=f"{system.key} x{size} warm-up")
                _, problem = self.check(system, warm, verify, "warm-up landing")
                self.db.reset()
                if problem is None:
                    out["max"], problem = self._max(system, size, mon, verify)
                if problem is None:
                    out["half"], problem = self._half(system, size, out["max"], verify)
            out["peak_rss_mib"] = mon.peak_total / MIB
            out["peak_rss_by_process_mib"] = {k: v / MIB for k, v in mon.peak_each.items()}
            if problem is not None:
                out["status"], out["problem"] = FAILED, problem
        except StartError as exc:
            out["status"], out["problem"] = FAILED, str(exc).splitlines()[0]
        finally:
            if out["status"] == FAILED:
                tqdm.write(f"{system.label} x{size} FAILED: {out['problem']}\n{system.log_tails()}")
            out["exit_codes"] = system.stop()
            self.db.reset()
            out["wall_s"] = time.monotonic() - started
        return out

    def _max(self, system: System, size: int, mon: Monitor, verify: bool) -> tuple[dict[str, Any], str | None]:
        t = self.timing
        me = psutil.Process()
        each0, pg0, machine0, wall0 = mon.cpu_each(), self._pg_cpu(), psutil.cpu_times(), time.monotonic()
        mine0 = sum(me.cpu_times()[:2])  # the benchmark's own polling and sampling
        load = self.load(system, size, "closed", t.max_s, t.max_requests[size], t.concurrency[size],
                         desc=f"{system.key} x{size} max")
        figures, problem = self.check(system, load, verify, f"{system.key} x{size} landing")
        each1, pg1, machine1, wall = mon.cpu_each(), self._pg_cpu(), psutil.cpu_times(), time.monotonic() - wall0
        rows = load["rows_ok"]
        each = {name: each1[name] - each0[name] for name in each1}
        pg = pg1 - pg0 if pg0 is not None and pg1 is not None else None
        ours = sum(each.values()) + (pg or 0) + load["client_cpu_total_s"] + sum(me.cpu_times()[:2]) - mine0
        # Share of one core each process used from the start of the load to the last row landed (the load
        # generator: while it ran): one near 100% is the bottleneck (each is one thread where it matters).
        share: dict[str, float | None] = {k: v / wall for k, v in each.items()}
        share["postgresql"] = None if pg is None else pg / wall
        share["load generator"] = load["client_cpu_s"] / load["elapsed_s"] if load["elapsed_s"] else None
        figures.update(load=_trim(load), requests_per_s=load["requests_per_s"], core_share=share,
                       machine_cpu=machine_share(machine0, machine1, ours, wall),
                       cpu_s_per_100k_rows=per_100k(sum(each.values()), rows),
                       pg_cpu_s_per_100k_rows=per_100k(pg, rows))
        self.db.reset()
        return figures, problem

    def _half(self, system: System, size: int, mx: dict[str, Any], verify: bool) -> tuple[dict[str, Any], str | None]:
        t = self.timing
        rates = [mx["requests_per_s"]]
        if verify and mx.get("rows_per_s_committed"):
            rates.append(mx["rows_per_s_committed"] / size)
        rate = 0.5 * min(r for r in rates if r)
        load = self.load(system, size, "open", t.half_s, t.max_requests[size], rate=rate,
                         desc=f"{system.key} x{size} half load")
        figures, problem = self.check(system, load, verify, f"{system.key} x{size} landing")
        figures.update(load=_trim(load), offered_rate=rate, requests_per_s=load["requests_per_s"])
        if verify and problem is None:
            figures["commit"] = self.db.commit_latency()
        self.db.reset()
        return figures, problem

    def copy_case(self, sessions: int, size: int) -> dict[str, Any]:
        """``sessions`` processes COPYing at once; rows/s from SQL.

        Beside single-row requests, transactions of one row (the cost of a commit per row); beside
        1,000-row requests, transactions of ``sink.batch_rows`` (5,000), the size zingest's sinks
        commit and, on our machine, the fastest of 1,000, 5,000 and 20,000: the ceiling is the most
        the database takes, whatever a request holds.
        """
        t = self.timing
        tx_rows = 1 if size == 1 else SinkConfig().batch_rows
        plural = "s" if sessions > 1 else ""
        out: dict[str, Any] = {"system": f"copy-{sessions}", "group": "ceiling", "size": size, "format": "copy",
                               "tx_rows": tx_rows, "status": OK, "problem": None,
                               "label": f"COPY, {sessions} session{plural}, {tx_rows:,}-row transactions (no HTTP)"}
        logs = self.env.work / "logs" / f"copy-{sessions}-{size}"
        share = t.copy_max_rows // sessions
        procs = [spawn(f"copy-{i}", ["-m", "benchmarks.copyload", "--dsn", self.db.dsn, "--first-id",
                                     str(i * 1_000_000_000 + 1), "--tx-rows", str(tx_rows), "--duration",
                                     f"{t.max_s:g}", "--max-rows", str(share)], logs,
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE) for i in range(sessions)]
        results: dict[str, dict[str, Any]] = {}
        try:
            events = Events(procs)
            ready = 0
            with Monitor({p.name: psutil.Process(p.pid) for p in procs}, trees=self._trees()) as mon, \
                    bar(total=share * sessions, desc=f"copy-{sessions} x{size}", unit="row", position=1,
                        leave=False) as progress:
                pg0 = self._pg_cpu()
                done: dict[str, int] = {}
                while len(results) < sessions:
                    name, event = events.get(timeout=t.max_s + KILL_MARGIN_S)
                    if event is None:
                        if name not in results:
                            raise StartError(f"{name} exited without a result")
                        continue
                    if event["event"] == "ready":
                        ready += 1
                        if ready == sessions:  # all connected: start them together
                            for p in procs:
                                assert p.popen.stdin is not None
                                p.popen.stdin.write(b"go\n")
                                p.popen.stdin.flush()
                    elif event["event"] == "progress":
                        done[name] = event["rows"]
                        progress.update(sum(done.values()) - progress.n)
                    elif event["event"] == "result":
                        results[name] = event
                pg1 = self._pg_cpu()
                for p in procs:  # each has printed its result and is closing its session
                    p.popen.wait(KILL_MARGIN_S)
            rows = sum(r["rows"] for r in results.values())
            landed = self.db.landed(rows, sum(r["id_sum"] for r in results.values()))
            span = landed.commit_seconds
            cpu = sum(r["cpu_s"] for r in results.values())
            out["max"] = {"rows_landed": landed.rows, "commit_span_s": span,
                          "rows_per_s_committed": rows / span if span and landed.ok else None,
                          "cpu_s_per_100k_rows": per_100k(cpu, rows),
                          "pg_cpu_s_per_100k_rows": per_100k(None if pg0 is None or pg1 is None else pg1 - pg0, rows)}
            out["peak_rss_mib"] = mon.peak_total / MIB
            if landed.problem():
                out["status"], out["problem"] = FAILED, landed.problem()
        except (StartError, queue.Empty, subprocess.TimeoutExpired) as exc:
            out["status"], out["problem"] = FAILED, str(exc) or "a COPY session did not answer in time"
        finally:
            out["exit_codes"] = {p.name: p.stop() for p in procs}
            self.db.reset()
        return out


def _trim(load: dict[str, Any]) -> dict[str, Any]:
    """The load generator's result without its event tag."""
    return {k: v for k, v in load.items() if k != "event"}
