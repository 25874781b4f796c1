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

from common.wire import Group

# Errors that mean "this data cannot be written", besides PostgreSQL's own.
# RecursionError: psycopg adapts nested lists recursively; a deep enough value exhausts the stack.
BAD_DATA_ERRORS = (psycopg.Error, RecursionError)

# What a NUL character (U+0000) becomes in a dead letter: the six characters \u0000. jsonb cannot hold a
# NUL even escaped, and the row must still be kept. This form is the one a reader already knows (JSON's
# own escape) and changes nothing else in the row: text holding the six characters as sent reads the
# same, so sink.deadletter notes in the dead letter's error when NULs were replaced; only a row that held
# both is then ambiguous. Escaping every backslash too would make it exact, but would garble every
# other row with a backslash in it, which is far more common than a NUL.
NUL_STAND_IN = "\\u0000"
# Deepest nesting json_safe keeps (orjson refuses past 255 levels, PostgreSQL at its max_stack_depth).
MAX_JSON_DEPTH = 200

@dataclass(frozen=True)
class BadRow:
    position: int  # among the job's rows, 0-based
    columns: tuple[str, ...]
    values: list[Any]
    sqlstate: str | None
    column: str | None
    message: str


def copy_line(exc: BaseException, table: str) -> tuple[int | None, str | None]:
    """The 1-based line and the column PostgreSQL blamed in a COPY error, where it said.

    The context reads ``COPY <table>, line N[, column C: ...]``; the table's own name is matched
    literally, so a name that itself holds ", line 1" cannot be mistaken for the line.
    """
    if not isinstance(exc, psycopg.Error) or not exc.diag.context:
        return None, None
    m = re.search(rf"COPY {re.escape(table)}, line (\d+)(?:, column ([^:]+):)?", exc.diag.context)
    if not m:
        return None, None
    return int(m.group(1)), m.group(2)


def error_text(exc: BaseException) -> str:
    if not isinstance(exc, psycopg.Error):
        return f"{type(exc).__name__}: {exc}".replace("\x00", NUL_STAND_IN)
    diag = exc.diag
    text = (diag.message_primary or str(exc)).strip()
    if diag.message_detail:
        text += f" ({diag.message_detail.strip()})"
    # Messages are stored as text and in jsonb: one quoting a value must not carry a NUL in with it.
    return text.replace("\x00", NUL_STAND_IN)


def describe(exc: BaseException) -> str:
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    return f"{state or 'error'}: {error_text(exc)}"


def _statement_error(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state.startswith("42")


def copy_isolating(conn: psycopg.Connection, cur: psycopg.Cursor, statement: sql.Composable, table: str,
                   group: Group, offset: int, is_transient: Any) -> list[BadRow]:
    """COPY ``rows``, setting aside the ones PostgreSQL refuses; returns those (transient errors raise).

    A window moves over the rows: it is copied in a savepoint; on success the window doubles, on a
    failure the named row is set aside, the rows before it are copied, and the window starts again
    at one row. Work stays linear in the rows even when every row is refused.
    """
    bad: list[BadRow] = []
    columns, rows = group.columns, group.rows

    def attempt(start: int, end: int) -> tuple[BaseException | None, int]:
        at = start
        try:
            with conn.transaction():  # a savepoint inside the job's transaction
                with cur.copy(statement) as copy:
                    for at in range(start, end):
                        copy.write_row(rows[at])
            return None, at
        except BAD_DATA_ERRORS as exc:
            if is_transient(exc, conn):
                raise
            return exc, at

    def refuse(k: int, failure: BaseException, column: str | None) -> None:
        state = getattr(failure, "sqlstate", None)
        bad.append(BadRow(group.position(k, offset), columns, rows[k], state, column, error_text(failure)))

    i, size, n = 0, len(rows), len(rows)
    while i < n:
        end = min(n, i + size)
        failure, at = attempt(i, end)
        if failure is None:
            i, size = end, size * 2
            continue
        if _statement_error(failure):  # the table or a column is gone: no row can land
            for k in range(i, n):
                refuse(k, failure, None)
            break
        line, column = copy_line(failure, table)
        if getattr(failure, "sqlstate", None) is None:  # psycopg could not adapt the row being written
            k = at
        elif line is not None and 1 <= line <= end - i:
            k = i + line - 1
        elif end - i == 1:
            k = i
        else:  # PostgreSQL did not say which row (e.g. a constraint checked at the end): halve
            size = max(1, (end - i) // 2)
            continue
        if k > i and attempt(i, k)[0] is not None:
            size = max(1, (k - i) // 2)  # the rows before it fail too, for another reason: look closer
            continue
        refuse(k, failure, column)
        i, size = k + 1, 1
    return bad


def json_safe(value: Any, depth: int = 0) -> Any:
    """A value as jsonb can hold it, for the dead-letter table (PostgreSQL reads these forms back).

    Works on Python values, never on JSON text: a NUL in a string or a key becomes NUL_STAND_IN,
    and orjson then escapes every backslash, so the six characters \\u0000 sent as text stay text.
    """
    if depth > MAX_JSON_DEPTH:
        raise ValueError("nested too deeply to keep")
    if type(value) is str:
        return value.replace("\x00", NUL_STAND_IN)
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is bytes:
        return "\\x" + value.hex()
    if type(value) is list:
        return [json_safe(v, depth + 1) for v in value]
    if type(value) is dict:
        return {json_safe(k, depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    return value


def holds_nul(value: Any, depth: int = 0) -> bool:
    """True when a string or a key in ``value`` holds a NUL (json_safe replaces them); as deep as json_safe goes."""
    if depth > MAX_JSON_DEPTH:
        return False
    if type(value) is str:
        return "\x00" in value
    if type(value) is list:
        return any(holds_nul(v, depth + 1) for v in value)
    if type(value) is dict:
        return any(holds_nul(k, depth + 1) or holds_nul(v, depth + 1) for k, v in value.items())
    return False
