"""`zingest up`: PostgreSQL (embedded unless database.dsn is set), one gateway and N sinks.

The supervisor starts each role as its own OS process (``python -m zingest
gateway|sink``) in its own session, so a terminal's Ctrl-C reaches only the
supervisor, which then stops the roles in order: the gateway first (no new
work, drain), then the sinks (commit what they hold), then PostgreSQL.
A role that dies is started again after a doubling back-off.

Signal handlers only set flags; the loop below does the work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg

from common.config import Config, ConfigError, load_config
from common.lifecycle import StopFlags
from common.logs import setup_logging
from common.schema import ensure_schema
from zingest.embedded import EmbeddedPostgres

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_START = 3

# How often the supervisor looks at its children (seconds).
CHECK_INTERVAL_S = 0.2
# Seconds the gateway and sinks may take to start and connect to each other.
READY_TIMEOUT_S = 60.0
# Restart back-off for a role that died: first delay, doubling up to the max (seconds).
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 10.0
# A child that has run this long is considered healthy again: its back-off resets.
HEALTHY_AFTER_S = 10.0
# Seconds each role gets to stop after SIGTERM before it is killed.
SINK_STOP_TIMEOUT_S = 30.0

log = logging.getLogger("zingest.up")


@dataclass
class Child:
    role: str
    index: int
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = RESTART_FIRST_S
    terminating: bool = False

    @property
    def name(self) -> str:
        return self.role if self.role == "gateway" else f"{self.role}-{self.index}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zingest", self.role, *self.args], env=self.env, start_new_session=True
        )
        self.started_at = time.monotonic()
        self.terminating = False
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self) -> None:
        """Ask the child to stop (once: a second SIGTERM would mean "exit now")."""
        if self.proc is not None and self.proc.poll() is None and not self.terminating:
            self.proc.send_signal(signal.SIGTERM)
            self.terminating = True

    def stop(self, timeout: float, force: threading.Event) -> int | None:
        """Terminate, wait up to ``timeout`` seconds (less once ``force`` is set), then kill."""
        if self.proc is None:
            return None
        self.terminate()
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline and not force.is_set():
            force.wait(CHECK_INTERVAL_S)
        if self.proc.poll() is None:
            log.warning("%s did not stop in time; killing it", self.name)
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode


def apply_schema_files(cfg: Config, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn)
        for name in cfg.database.schema_files:
            path = cfg.path(name)
            conn.execute(path.read_text(encoding="utf-8"))
            log.info("applied %s", name)


def is_ready(cfg: Config, sinks: int) -> bool:
    """The gateway answers /healthz with every sink connected to it."""
    try:
        with urllib.request.urlopen(f"http://{cfg.gateway.listen}/healthz", timeout=1) as resp:
            return json.loads(resp.read()).get("sinks_connected", 0) >= sinks
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, sinks: int, stop: StopFlags) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.sinks = sinks
        self.stop = stop
        self.embedded: EmbeddedPostgres | None = None

    def run(self) -> int:
        try:
            dsn = self.cfg.database.dsn
            if not dsn:
                self.embedded = EmbeddedPostgres(self.cfg.path(self.cfg.database.embedded_dir))
                dsn = self.embedded.start()
            apply_schema_files(self.cfg, dsn)
        except (psycopg.Error, OSError) as exc:
            log.error("cannot prepare the database: %s", exc)
            self._stop_db()
            return EXIT_START
        try:
            return self._run_children(dsn)
        finally:
            self._stop_db()

    def _stop_db(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            log.info("embedded PostgreSQL stopped")

    def _run_children(self, dsn: str) -> int:
        env = dict(os.environ, ZINGEST_DATABASE__DSN=dsn)
        args = ["--config", self.config_path] if self.config_path else []
        gateway = Child("gateway", 0, args, env)
        sinks = [Child("sink", i, args, self._sink_env(env, i)) for i in range(self.sinks)]
        children = [gateway, *sinks]
        for child in children:
            child.start()
        ready_by = time.monotonic() + READY_TIMEOUT_S
        announced = False
        while not self.stop.should_exit.wait(CHECK_INTERVAL_S):
            failed = self._tend(children, announced)
            if failed is not None:
                self._shutdown(gateway, sinks)
                return failed
            if announced:
                continue
            if is_ready(self.cfg, self.sinks):
                # The two lines a person needs: where to send, and which database it lands in.
                print(f"zingest is up: http://{self.cfg.gateway.listen}  ({self.sinks} sinks)", flush=True)
                print(f"PostgreSQL: {dsn}", flush=True)
                announced = True
            elif time.monotonic() > ready_by:
                log.error("the gateway and its sinks did not become ready in %.0f s; stopping", READY_TIMEOUT_S)
                self._shutdown(gateway, sinks)
                return EXIT_START
        self._shutdown(gateway, sinks)
        restarts = sum(c.restarts for c in children)
        log.info("zingest stopped: gateway and %d sinks, %d restarts", len(sinks), restarts)
        return EXIT_OK

    def _tend(self, children: list[Child], announced: bool) -> int | None:
        """Restart children that died, after their back-off; an exit code if starting up is hopeless."""
        now = time.monotonic()
        for child in children:
            if child.alive():
                if now - child.started_at > HEALTHY_AFTER_S:
                    child.backoff = RESTART_FIRST_S
                continue
            if child.next_start == 0.0:
                code = child.proc.returncode if child.proc else None
                if code == EXIT_CONFIG or (code == EXIT_START and not announced):
                    log.error("%s could not start (exit %s); see its log above", child.name, code)
                    return code
                child.next_start = now + child.backoff
                log.warning("%s exited with %s; restarting in %.1f s", child.name, code, child.backoff)
                child.backoff = min(child.backoff * 2, RESTART_MAX_S)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.restarts += 1
                child.start()
        return None

    def _sink_env(self, env: dict[str, str], index: int) -> dict[str, str]:
        """Sink i serves its metrics on sink.metrics_listen's port + i."""
        listen = self.cfg.sink.metrics_listen
        if not listen:
            return env
        host, _, port = listen.rpartition(":")
        return {**env, "ZINGEST_SINK__METRICS_LISTEN": f"{host}:{int(port) + index}"}

    def _shutdown(self, gateway: Child, sinks: list[Child]) -> None:
        """Gateway first (stop intake, drain), then sinks (commit what they hold); a second signal kills."""
        gateway.stop(self.cfg.gateway.drain_timeout_s + 5, self.stop.force_exit)
        for sink in sinks:
            sink.terminate()
        for sink in sinks:
            code = sink.stop(SINK_STOP_TIMEOUT_S, self.stop.force_exit)
            if code not in (0, None):
                log.warning("%s exited with %s", sink.name, code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zingest up", description="Run PostgreSQL, a gateway and N sinks.")
    parser.add_argument("--config", help="path to config.toml (default: ./config.toml if present)")
    parser.add_argument("--sinks", type=int, help="number of sink processes (default: sink.count)")
    args = parser.parse_args(argv)
    config_path = args.config
    if config_path is None and Path("config.toml").exists():
        config_path = "config.toml"
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        parser.exit(EXIT_CONFIG, f"zingest up: {exc}\n")
    sinks = args.sinks if args.sinks is not None else cfg.sink.count
    if sinks < 1:
        parser.exit(EXIT_CONFIG, "zingest up: --sinks must be at least 1\n")
    setup_logging(cfg.log.level, "up")
    stop = StopFlags()
    stop.install()
    return Supervisor(cfg, config_path, sinks, stop).run()
