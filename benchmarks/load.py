"""The load generator: one process, asyncio + aiohttp on uvloop, closed or open loop, bounded.

``python -m benchmarks.load --url URL --size N --mode closed --concurrency C --duration S``
keeps C requests in flight until S seconds or ``--max-requests`` have passed
(the maximum a system takes); ``--mode open --rate R`` starts requests at R per
second on a fixed schedule whatever the answers do (latency at a given load,
free of coordinated omission: each latency counts from when its request was due).

Request ``k`` (from 0) carries rows ``first_id + k*N .. first_id + (k+1)*N - 1``
(see :mod:`benchmarks.data`). A 503 or 429 is retried with the same rows after
:data:`RETRY_PAUSE_S` until the hard deadline, as a client honouring back-pressure
would; its latency runs to the final answer. Any other answer or a broken
connection is an error: its rows are not expected to land, and the run fails.

stdout carries JSON lines: ``{"event": "progress", "requests": n}`` now and then,
and one ``{"event": "result", ...}`` at the end (counts, id checksum of the
acknowledged rows, acknowledgement latency percentiles in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop
import yarl

from benchmarks.data import FORMATS, Bodies, id_sum, iso

# Pause before retrying a request refused with 503/429 (seconds): the client's own pacing.
RETRY_PAUSE_S = 0.01
# After the load's duration, how long answers may still take before in-flight requests are abandoned.
GRACE_S = 60.0
# How often progress is printed (seconds).
PROGRESS_S = 0.25
# Most requests in flight in an open loop (a cap, so a stalled server cannot make the client unbounded).
OPEN_MAX_IN_FLIGHT = 2048
# Connections an open loop keeps (as wrk does): requests due while all are busy wait for one, and their
# latency counts that wait. Unbounded connections would turn a server's pause into a storm of new
# connections overflowing its listen backlog, measuring SYN retransmits instead of the server.
OPEN_CONNECTIONS = 64


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of ``values`` (nearest rank), or None each when empty."""
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(q * len(s) + 0.5) - 1))]

    return {"p50_ms": rank(0.50), "p90_ms": rank(0.90), "p99_ms": rank(0.99), "max_ms": s[-1]}


@dataclass
class Tally:
    """Everything one load run counts."""

    ok: int = 0
    rows: int = 0
    id_sum: int = 0
    refused: int = 0
    errors: int = 0
    error_sample: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    late_ms: float = 0.0
    first_send: float | None = None
    last_ack: float = 0.0


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.bodies = Bodies(args.format, args.size)
        self.url = yarl.URL(args.url)  # parsed once, not on every request
        self.tally = Tally()
        self.wall0 = time.time()
        self.mono0 = time.perf_counter()
        self.hard_deadline = self.mono0 + args.duration + GRACE_S

    def wall(self, mono: float) -> float:
        return self.wall0 + (mono - self.mono0)

    async def send(self, session: aiohttp.ClientSession, k: int, due: float | None) -> None:
        """Request ``k``; ``due`` is when an open loop scheduled it (None: now, closed loop)."""
        a, t = self.args, self.tally
        start = time.perf_counter() if due is None else due
        first_id = a.first_id + k * a.size
        body = self.bodies.body(first_id, iso(self.wall(start)))
        if t.first_send is None:
            t.first_send = start
        while True:
            try:
                async with session.post(self.url, data=body) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._error(f"request {k}: {type(exc).__name__}: {exc}")
                return
            now = time.perf_counter()
            if 200 <= status < 300:
                t.ok += 1
                t.rows += a.size
                t.id_sum += id_sum(first_id, a.size)
                t.latencies_ms.append((now - start) * 1000)
                t.last_ack = max(t.last_ack, now)
                return
            if status in (429, 503) and now < self.hard_deadline:
                t.refused += 1
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            self._error(f"request {k}: HTTP {status}")
            return

    def _error(self, text: str) -> None:
        self.tally.errors += 1
        if not self.tally.error_sample:
            self.tally.error_sample = text

    async def closed(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        end = time.perf_counter() + a.duration
        counter = iter(range(a.max_requests))

        async def worker() -> None:
            for k in counter:
                if time.perf_counter() >= end:
                    return
                await self.send(session, k, None)

        await asyncio.gather(*(worker() for _ in range(a.concurrency)))

    async def open(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        total = min(a.max_requests, int(a.rate * a.duration))
        slots = asyncio.Semaphore(OPEN_MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()

        async def one(k: int, due: float) -> None:
            try:
                await self.send(session, k, due)
            finally:
                slots.release()

        for k in range(total):
            due = t0 + k / a.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            self.tally.late_ms = max(self.tally.late_ms, (time.perf_counter() - due) * 1000)
            task = asyncio.create_task(one(k, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    async def connect(self, session: aiohttp.ClientSession, connections: int) -> None:
        """Open every connection the load will use before it starts (as wrk does), so no measured
        request pays for a TCP handshake: ``connections`` concurrent GETs of the system's /healthz."""
        health = self.url.with_path("/healthz")

        async def one() -> None:
            async with session.get(health) as resp:
                await resp.read()

        await asyncio.gather(*(one() for _ in range(connections)))
        self.hard_deadline = time.perf_counter() + self.args.duration + GRACE_S

    async def progress(self) -> None:
        while True:
            emit({"event": "progress", "requests": self.tally.ok})
            await asyncio.sleep(PROGRESS_S)

    async def run(self) -> dict[str, Any]:
        a = self.args
        limit = a.concurrency if a.mode == "closed" else OPEN_CONNECTIONS
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
        headers = {"Content-Type": self.bodies.content_type}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        ticker = asyncio.create_task(self.progress())
        async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
            await self.connect(session, limit)
            cpu0 = time.process_time()
            load = self.closed(session) if a.mode == "closed" else self.open(session)
            try:
                await asyncio.wait_for(load, timeout=max(0.0, self.hard_deadline - time.perf_counter()))
            except TimeoutError:
                self._error(f"requests still unanswered {GRACE_S:.0f} s after the load ended")
        ticker.cancel()
        t = self.tally
        elapsed = (t.last_ack - t.first_send) if t.first_send is not None and t.ok else 0.0
        return {
            "event": "result", "mode": a.mode, "size": a.size, "format": a.format,
            "concurrency": a.concurrency if a.mode == "closed" else None,
            "offered_rate": a.rate if a.mode == "open" else None,
            "requests_ok": t.ok, "rows_ok": t.rows, "id_sum": t.id_sum, "refused": t.refused,
            "errors": t.errors, "error_sample": t.error_sample,
            "elapsed_s": elapsed, "requests_per_s": t.ok / elapsed if elapsed > 0 else None,
            "first_send_unix": self.wall(t.first_send) if t.first_send is not None else None,
            "ack": percentiles(t.latencies_ms), "late_max_ms": t.late_ms,
            # The client's own CPU: near elapsed_s means the client, not the server, set the pace.
            "client_cpu_s": time.process_time() - cpu0,
            "client_cpu_total_s": time.process_time(),  # with start-up (imports, building the row pool)
        }


def emit(event: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.load", description="Drive HTTP load, bounded in count and time.")
    p.add_argument("--url", required=True)
    p.add_argument("--format", choices=sorted(FORMATS), default="json")
    p.add_argument("--size", type=int, required=True, help="rows per request")
    p.add_argument("--mode", choices=("closed", "open"), required=True)
    p.add_argument("--concurrency", type=int, default=32, help="closed loop: requests in flight")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    p.add_argument("--duration", type=float, required=True, help="seconds of load")
    p.add_argument("--max-requests", type=int, required=True, help="never more requests than this")
    p.add_argument("--first-id", type=int, default=1)
    args = p.parse_args(argv)
    if args.mode == "open" and args.rate <= 0:
        p.error("--mode open needs --rate > 0")
    client = Client(args)
    gc.freeze()  # the row pool and imports are permanent: keep them out of every collection
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        emit(runner.run(client.run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
