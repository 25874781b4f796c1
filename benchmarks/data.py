"""The rows every system loads: generated rides (fixed seed), the bench table, and request bodies.

Every system gets the same rows: row ``k`` carries id ``k`` and the values of
generated ride ``(k - 1) % POOL_ROWS`` of ``zingest.gen.rides(POOL_ROWS, SEED)``
(a pool, so that no process spends seconds generating millions of rows), plus
``sent_at``, the instant the client built the request (or, in an open loop, the
instant it was due). ``landed_at`` is filled by PostgreSQL's ``clock_timestamp()``
as the row is written, so ``landed_at - sent_at`` is each row's commit latency,
measured in SQL on one clock.

The bench table has the columns of ``public.rides`` (``schema/rides.sql``) but no
primary key, on purpose: a row written twice stays visible as two rows, so the
check catches duplicates instead of a constraint hiding them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from zingest.gen import COLUMNS, rides

ROOT = Path(__file__).resolve().parent.parent
SEED = 1
POOL_ROWS = 10_000
TABLE = "bench_rides"
# Columns every client sends, in this order; landed_at is left to its default.
SENT_COLUMNS: tuple[str, ...] = (*COLUMNS, "sent_at")

JSON = "application/json"
CSV = "text/csv"
FORMATS = {"json": JSON, "csv": CSV}


def table_ddl() -> str:
    """SQL that (re)creates the bench table from ``public.rides``; run after ``schema/rides.sql``."""
    return (
        f"DROP TABLE IF EXISTS public.{TABLE};\n"
        f"CREATE TABLE public.{TABLE} (LIKE public.rides INCLUDING DEFAULTS,\n"
        "    sent_at   timestamptz NOT NULL,\n"
        "    landed_at timestamptz NOT NULL DEFAULT clock_timestamp());\n"
    )


def rides_ddl() -> str:
    return (ROOT / "schema" / "rides.sql").read_text(encoding="utf-8")


def pool() -> list[dict[str, Any]]:
    """The generated rides rows are drawn from (ids are replaced per row)."""
    return list(rides(POOL_ROWS, SEED))


def iso(ts: float) -> str:
    """A Unix time as the ISO 8601 text clients send (microseconds, UTC offset)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""  # an unquoted empty field is NULL, as COPY (FORMAT csv) reads it
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)  # numbers and ISO timestamps hold no comma, quote or line break


class Bodies:
    """Builds request bodies: ``size`` consecutive rows from ``first_id``, each with ``sent_at``.

    The per-row text without id and sent_at is serialised once, so building a
    1,000-row body is one join, cheap enough to leave the client's CPU to HTTP.
    A single-row JSON request is one object, a batch an array; CSV has a header.
    """

    def __init__(self, fmt: str, size: int) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt, self.size = fmt, size
        self.content_type = FORMATS[fmt]
        rows = pool()
        if fmt == "json":
            self._mids = [orjson.dumps({k: v for k, v in r.items() if k != "id"})[1:-1] for r in rows]
        else:
            self._mids = [",".join(_csv_value(r[c]) for c in COLUMNS[1:]).encode() for r in rows]
        self._header = (",".join(SENT_COLUMNS) + "\n").encode()

    def rows(self, first_id: int, sent_at: str) -> list[bytes]:
        mids, n, ts = self._mids, len(self._mids), sent_at.encode()
        if self.fmt == "json":
            return [b'{"id":%d,%s,"sent_at":"%s"}' % (i, mids[(i - 1) % n], ts)
                    for i in range(first_id, first_id + self.size)]
        return [b"%d,%s,%s\n" % (i, mids[(i - 1) % n], ts) for i in range(first_id, first_id + self.size)]

    def body(self, first_id: int, sent_at: str) -> bytes:
        rows = self.rows(first_id, sent_at)
        if self.fmt == "csv":
            return self._header + b"".join(rows)
        return rows[0] if self.size == 1 else b"[" + b",".join(rows) + b"]"


def copy_rows(first_id: int, count: int, sent_at: str, rows: list[dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples in :data:`SENT_COLUMNS` order, for ``COPY ... FROM STDIN`` with ``write_row``."""
    n = len(rows)
    for i in range(first_id, first_id + count):
        r = rows[(i - 1) % n]
        yield (i, *(r[c] for c in COLUMNS[1:]), sent_at)


def id_sum(first_id: int, count: int) -> int:
    """Sum of the ids ``first_id .. first_id + count - 1``: what the check compares in SQL."""
    return count * (2 * first_id + count - 1) // 2
