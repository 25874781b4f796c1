"""Finds the rows PostgreSQL refuses inside one job, so that every other row still lands.

Used only after a batch was refused as a whole. Within the job's transaction
each COPY runs in a savepoint. When PostgreSQL names the failing line (it does
for bad values and for constraint violations checked row by row) that row is
set aside and the rows around it are copied again; when it cannot say
(deferred constraints), the range is halved until the bad rows are alone. A
value psycopg itself cannot adapt is caught on the row being written. Errors
about the statement rather than a row (the table or a column is gone, no
privilege: SQLSTATE class 42) refuse every row of the group at once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Errors that mean "this data cannot be written", besides PostgreSQL's own.
# RecursionError: psycopg adapts nested lists recursively; a deep enough value exhausts the stack.
BAD_DATA_ERRORS = (psycopg.Error, RecursionError)

_COPY_CONTEXT = re.compile(r"COPY [^,]+, line (\d+)(?:, column ([^:]+))?")


@dataclass(frozen=True)
class BadRow:
    position: int  # among the job's rows, 0-based
    columns: tuple[str, ...]
    values: list[Any]
    sqlstate: str | None
    column: str | None
    message: str


def copy_line(exc: BaseException) -> tuple[int | None, str | None]:
    """The 1-based line and the column PostgreSQL blamed in a COPY error, where it said."""
    if not isinstance(exc, psycopg.Error) or not exc.diag.context:
        return None, None
    m = _COPY_CONTEXT.search(exc.diag.context)
    if not m:
        return None, None
    return int(m.group(1)), m.group(2)


def error_text(exc: BaseException) -> str:
    if not isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__}: {exc}"
    diag = exc.diag
    text = (diag.message_primary or str(exc)).strip()
    if diag.message_detail:
        text += f" ({diag.message_detail.strip()})"
    return text


def _statement_error(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith("42")


def copy_isolating(conn: psycopg.Connection, cur: psycopg.Cursor, statement: sql.Composable,
                   columns: tuple[str, ...], rows: list[list[Any]], offset: int,
                   is_transient: Any) -> list[BadRow]:
    """COPY ``rows``, setting aside the ones PostgreSQL refuses; returns those (transient errors raise)."""
    bad: list[BadRow] = []
    ranges = [(0, len(rows))]
    while ranges:
        start, end = ranges.pop()
        if start >= end:
            continue
        at = start
        try:
            with conn.transaction():  # a savepoint inside the job's transaction
                with cur.copy(statement) as copy:
                    for at in range(start, end):
                        copy.write_row(rows[at])
            continue
        except BAD_DATA_ERRORS as exc:
            if is_transient(exc, conn):
                raise
            failure = exc
        state = getattr(failure, "sqlstate", None)
        line, column = copy_line(failure)
        if _statement_error(failure):
            for k in range(start, end):
                bad.append(BadRow(offset + k, columns, rows[k], state, None, error_text(failure)))
            continue
        if state is None:  # raised by psycopg while adapting the row being written
            k = at
        elif line is not None and 1 <= line <= end - start:
            k = start + line - 1
        elif end - start == 1:
            k = start
        else:
            mid = (start + end) // 2
            ranges += [(mid, end), (start, mid)]
            continue
        bad.append(BadRow(offset + k, columns, rows[k], state, column, error_text(failure)))
        ranges += [(k + 1, end), (start, k)]
    bad.sort(key=lambda b: b.position)
    return bad


def json_safe(value: Any, depth: int = 0) -> Any:
    """A value as JSON can hold it, for the dead-letter table (PostgreSQL reads these forms back)."""
    if depth > 200:
        raise ValueError("nested too deeply to keep")
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is bytes:
        return "\\x" + value.hex()
    if type(value) is list:
        return [json_safe(v, depth + 1) for v in value]
    if type(value) is dict:
        return {k: json_safe(v, depth + 1) for k, v in value.items()}
    return value
