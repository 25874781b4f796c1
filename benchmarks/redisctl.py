"""The Redis server the original design needs: the one on 127.0.0.1:6379 if it answers, else our own.

Our own is ``redis-server`` on a free loopback port with persistence off,
stopped at the end. Where neither exists, :func:`find_redis` says why and how
to install it (``apt-get install redis-server``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from benchmarks.procs import free_port, wait_until

DEFAULT_PORT = 6379
INSTALL_HINT = "redis-server is not installed and nothing answers on 127.0.0.1:6379: apt-get install redis-server"
READY_TIMEOUT_S = 20.0


@dataclass
class RedisServer:
    host: str
    port: int
    started: subprocess.Popen[bytes] | None  # None: a server that was already running

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port)

    def facts(self) -> dict[str, str]:
        with self.client() as c:
            info = c.info("server")
            conf = c.config_get("save") | c.config_get("appendonly")
        return {"version": str(info.get("redis_version")),
                "origin": "started by the benchmark" if self.started else "already running on port 6379",
                "save": str(conf.get("save")), "appendonly": str(conf.get("appendonly"))}

    def process(self) -> psutil.Process | None:
        """The server's process, when it runs here and we may look at it (for its CPU and memory)."""
        try:
            with self.client() as c:
                proc = psutil.Process(int(c.info("server")["process_id"]))
            return proc if "redis" in proc.name() else None
        except (psutil.Error, KeyError, redis.RedisError):
            return None

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            self.started.terminate()
            try:
                self.started.wait(10)
            except subprocess.TimeoutExpired:
                self.started.kill()
                self.started.wait()


def _answers(port: int) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=1) as c:
            return bool(c.ping())
    except redis.RedisError:
        return False


def find_redis(work: Path) -> RedisServer | str:
    """A reachable Redis server, or the reason there is none."""
    if _answers(DEFAULT_PORT):
        return RedisServer("127.0.0.1", DEFAULT_PORT, None)
    binary = shutil.which("redis-server")
    if binary is None:
        return INSTALL_HINT
    port = free_port()
    log = open(work / "redis-server.log", "ab")  # noqa: SIM115  (the child keeps its own copy)
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(work)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = RedisServer("127.0.0.1", port, proc)
    try:
        wait_until(lambda: proc.poll() is not None or _answers(port), READY_TIMEOUT_S, "redis-server")
    except Exception:
        server.stop()
        raise
    if proc.poll() is not None:
        return f"redis-server exited with {proc.returncode} at start"
    return server
