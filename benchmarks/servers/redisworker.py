"""The original design's worker: BRPOP a job from the Redis list, INSERT its rows (executemany), commit.

Connects to Redis at ``--redis`` (list ``--queue``) and to PostgreSQL at
``--dsn``; one job per transaction, as the Go service's workers did. The
benchmark runs two of these processes. On SIGTERM it finishes the job in hand
and exits (BRPOP waits at most one second, so a stop is seen promptly).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

import psycopg
import redis

from benchmarks.servers.common import INSERT, params

# Longest a BRPOP blocks, so a stop request is noticed (seconds).
POP_TIMEOUT_S = 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="redisworker", description="BRPOP jobs and INSERT their rows.")
    p.add_argument("--redis", required=True, help="host:port")
    p.add_argument("--queue", required=True)
    p.add_argument("--dsn", required=True)
    args = p.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, _, port = args.redis.rpartition(":")
    queue = redis.Redis(host=host, port=int(port))
    queue.ping()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        while not stop.is_set():
            item: Any = queue.brpop([args.queue], timeout=POP_TIMEOUT_S)
            if item is None:
                continue
            _job_id, _, body = bytes(item[1]).partition(b"\n")
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT, params(body))
    queue.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
