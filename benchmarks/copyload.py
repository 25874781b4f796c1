"""The database ceiling: one session COPYing the bench rows with psycopg 3 ``write_row``, no HTTP.

``python -m benchmarks.copyload --dsn DSN --first-id K --tx-rows R --duration S --max-rows M``
connects, prints ``{"event": "ready"}``, waits for a line on stdin (so that
several sessions start together), then COPYs transactions of R rows (ids from
K, ``sent_at`` set when each transaction's rows are built) until S seconds or M
rows, and prints ``{"event": "result", "rows", "id_sum", "elapsed_s"}``. The
benchmark runs one such process per session.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson
import psycopg
from psycopg import sql

from benchmarks.data import SENT_COLUMNS, TABLE, id_sum, iso, pool
from zingest.gen import COLUMNS


def emit(event: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.copyload", description="COPY bench rows from one session.")
    p.add_argument("--dsn", required=True)
    p.add_argument("--first-id", type=int, default=1)
    p.add_argument("--tx-rows", type=int, default=5000, help="rows per COPY transaction")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--max-rows", type=int, required=True)
    args = p.parse_args(argv)
    values = [tuple(r[c] for c in COLUMNS[1:]) for r in pool()]
    n = len(values)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier("public", TABLE), sql.SQL(", ").join(map(sql.Identifier, SENT_COLUMNS)))
    rows = total = 0
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        emit({"event": "ready"})
        sys.stdin.readline()
        start = time.perf_counter()
        end = start + args.duration
        next_id = args.first_id
        while time.perf_counter() < end and rows < args.max_rows:
            count = min(args.tx_rows, args.max_rows - rows)
            sent_at = iso(time.time())
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                for i in range(next_id, next_id + count):
                    copy.write_row((i, *values[(i - 1) % n], sent_at))
            total += id_sum(next_id, count)
            rows += count
            next_id += count
            emit({"event": "progress", "rows": rows})
        elapsed = time.perf_counter() - start
    emit({"event": "result", "rows": rows, "id_sum": total, "elapsed_s": elapsed, "cpu_s": time.process_time()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
