"""Processes: start them, wait until they serve, stop them, and measure their CPU and memory.

Every process the benchmark starts runs from the repository root with the
interpreter running the benchmark, writes its output to a log file in the work
folder, and is stopped with SIGTERM (then SIGKILL after a bound). Waits poll a
condition with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

import psutil

from benchmarks.data import ROOT

# Seconds a process gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0
# How often readiness is polled (seconds).
POLL_S = 0.02


class StartError(RuntimeError):
    """A process exited or did not become ready in time; the message holds its log's tail."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without ZINGEST_* (a developer's settings must not leak in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZINGEST_")}
    env.update(extra)
    return env


@dataclass
class Proc:
    """One started process and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return int(self.popen.returncode)


def spawn(name: str, args: list[str], logs: Path, env: dict[str, str] | None = None,
          stdin: int | None = None, stdout: int | None = None) -> Proc:
    """``python args...`` from the repository root, output (or only stderr) to ``logs/name.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}.log"
    log = open(path, "ab")  # noqa: SIM115  (held by the Proc until it stops)
    popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=child_env(env or {}), stdin=stdin,
                             stdout=stdout if stdout is not None else log, stderr=log)
    return Proc(name, popen, path, log)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               procs: list[Proc] | None = None) -> None:
    """Poll ``predicate`` until true; StartError if ``timeout`` passes or one of ``procs`` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for p in procs or ():
            if not p.alive():
                raise StartError(f"{p.name} exited with {p.popen.returncode} while waiting for {what}:\n"
                                 f"{p.log_tail()}")
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in procs or ())
            raise StartError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(POLL_S)


def http_json(url: str, timeout: float = 1.0) -> dict | None:
    """GET ``url``; its JSON body if it answered 200, else None."""
    import json

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read()) if resp.status == 200 else None
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of ``proc``, its reaped children, and its live children (recursively)."""
    try:
        t = proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0.0


def rss_bytes(proc: psutil.Process) -> int:
    """Resident memory of ``proc`` and its live children."""
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    except psutil.NoSuchProcess:
        return 0


class TreeCpu:
    """CPU used by a process and all its descendants, including those that exit between two looks.

    A parent's ``children_*`` times count only children it reaped with wait(), which PostgreSQL's
    postmaster does not make visible, so each process's CPU is remembered at every :meth:`sample`
    (the monitor's tick); one that exits keeps its last sample. Processes are told apart by pid and
    start time, so a reused pid is a new process.
    """

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.last: dict[tuple[int, float], float] = {}

    def sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                self.last[(p.pid, p.create_time())] = t.user + t.system
            except psutil.NoSuchProcess:
                continue

    def total(self) -> float:
        self.sample()
        return sum(self.last.values())


class Monitor:
    """Samples the RSS of named processes every ``interval`` seconds on a thread; keeps the peak of the sum.

    ``series`` keeps every sample (seconds since start, {name: bytes}) when ``keep_series`` is set (the soak).
    ``trees`` are sampled on the same tick (see :class:`TreeCpu`). A ``shared`` process (a server that was
    running before and serves others too) counts only what it grew by since the first sample.
    """

    def __init__(self, procs: dict[str, psutil.Process], interval: float = 0.2, keep_series: bool = False,
                 trees: list[TreeCpu] | None = None, shared: frozenset[str] = frozenset()) -> None:
        self.procs = procs
        self.trees = trees or []
        self.shared = shared
        self._baseline: dict[str, int] | None = None
        self.interval = interval
        self.keep_series = keep_series
        self.peak_total = 0
        self.peak_each: dict[str, int] = dict.fromkeys(procs, 0)
        self.series: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> Self:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        for tree in self.trees:
            tree.sample()
        each = {name: rss_bytes(p) for name, p in self.procs.items()}
        if self._baseline is None:
            self._baseline = {name: each[name] for name in self.shared}
        for name, base in self._baseline.items():
            each[name] = max(0, each[name] - base)
        self.peak_total = max(self.peak_total, sum(each.values()))
        for name, value in each.items():
            self.peak_each[name] = max(self.peak_each[name], value)
        if self.keep_series:
            self.series.append((time.monotonic() - self._t0, each))

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def cpu(self) -> float:
        return sum(self.cpu_each().values())

    def cpu_each(self) -> dict[str, float]:
        return {name: cpu_seconds(p) for name, p in self.procs.items()}
