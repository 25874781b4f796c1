"""Keeps refused rows in ``zingest.dead_letters``, inside the transaction of the job they came from.

Each row is kept as sent: a JSON object of column -> value, json/jsonb values
back as JSON rather than the text the sink sent. Storing one never fails
because of what the row holds: a row is built as Python values and serialised
by orjson (never patched as JSON text), a NUL, which jsonb cannot hold, becomes
the six characters \\u0000 (sink.isolate.NUL_STAND_IN, noted in the error), and
a row jsonb still refuses is kept as a JSON string of its text form. Only the
database itself (a lost connection, a broken zingest schema) makes ``store`` raise.
"""

from __future__ import annotations

import logging

import orjson
import psycopg
from psycopg.types.json import Jsonb

from common.wire import Job
from sink.isolate import NUL_STAND_IN, BadRow, describe, holds_nul, json_safe

log = logging.getLogger(__name__)

_INSERT_DEAD = """
INSERT INTO zingest.dead_letters (job_id, table_name, row_number, "row", sqlstate, column_name, error)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

# Tables live in schema public, and a dot in the name is part of the name (as in sink.writer.qualified).
_JSON_COLUMNS = """
SELECT attname FROM pg_attribute
 WHERE attrelid = to_regclass(format('public.%%I', %s::text)) AND attnum > 0 AND NOT attisdropped
   AND atttypid IN ('json'::regtype, 'jsonb'::regtype)
"""

# SQLSTATE classes of a value PostgreSQL will not store: data exception, program limit exceeded.
DATA_CLASSES = frozenset({"22", "54"})
# Longest text form of a row kept when jsonb will not take the row (characters).
MAX_TEXT_FORM = 100_000
# Appended to a dead letter's error when NULs in its row were replaced: the row is exact without it.
NUL_NOTE = f" [NUL characters in this row are kept as the six characters {NUL_STAND_IN}: jsonb cannot hold NUL]"


class DeadLetters:
    """Stores refused rows; caches which columns of a table are json/jsonb."""

    def __init__(self) -> None:
        self._json_columns: dict[str, frozenset[str]] = {}
        self.kept_as_text = 0  # dead letters whose row jsonb refused, kept as text instead

    def store(self, cur: psycopg.Cursor, job: Job, bad: list[BadRow]) -> None:
        if job.table not in self._json_columns:
            cur.execute(_JSON_COLUMNS, (job.table,))
            self._json_columns[job.table] = frozenset(r[0] for r in cur.fetchall())
        json_columns = self._json_columns[job.table]
        letters = [(b, *kept_row(b, json_columns)) for b in bad]
        try:
            # A savepoint: a dead letter refused here must leave the job's transaction usable.
            with cur.connection.transaction():
                cur.executemany(_INSERT_DEAD, [_params(job, b, row, error) for b, row, error in letters])
            return
        except psycopg.Error as exc:
            if not refused_for_data(exc):
                raise
            log.warning("job %s into %s: %d dead letters refused together (%s); storing them one by one",
                        job.job_id, job.table, len(letters), describe(exc))
        as_text = 0
        for b, row, error in letters:
            try:
                with cur.connection.transaction():
                    cur.execute(_INSERT_DEAD, _params(job, b, row, error))
                continue
            except psycopg.Error as exc:
                if not refused_for_data(exc):
                    raise
                why = describe(exc)
            cur.execute(_INSERT_DEAD, _params(job, b, *text_form(b, why)))
            as_text += 1
        self.kept_as_text += as_text
        log.warning("job %s into %s: %d of %d dead letters kept as text, jsonb refused their rows",
                    job.job_id, job.table, as_text, len(letters))


def kept_row(b: BadRow, json_columns: frozenset[str]) -> tuple[Jsonb, str]:
    """A refused row as jsonb will hold it, and the error to keep with it.

    Text surgery on the JSON cannot tell an escaped NUL (\\u0000) from an escaped backslash
    followed by "u0000"; a wrong guess makes an insert that fails each time the job is delivered.
    """
    row, nul = {}, False
    for name, value in zip(b.columns, b.values):
        if name in json_columns and type(value) is str:
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        try:
            row[name] = json_safe(value)
        except ValueError:
            row[name] = f"<{type(value).__name__} that JSON cannot hold>"
            continue
        nul = nul or holds_nul(value)
    try:
        text = _dumps(row)
    except (TypeError, ValueError, RecursionError) as exc:  # orjson: an int past 64 bits, a lone surrogate, ...
        return text_form(b, f"{type(exc).__name__}: {exc}")
    return Jsonb(text, dumps=_verbatim), b.message + (NUL_NOTE if nul else "")


def text_form(b: BadRow, why: str) -> tuple[Jsonb, str]:
    """The row as a JSON string of its text form: ASCII only (every other character escaped), always storable."""
    parts = []
    for name, value in zip(b.columns, b.values):
        try:
            shown = ascii(value)
        except RecursionError:
            shown = f"<{type(value).__name__} nested too deeply to show>"
        parts.append(f"{ascii(name)}: {shown}")
    text = "{" + ", ".join(parts) + "}"
    if len(text) > MAX_TEXT_FORM:
        text = f"{text[:MAX_TEXT_FORM]}... ({len(text)} characters in all)"
    return Jsonb(_dumps(text), dumps=_verbatim), f"{b.message} [row kept as its text, jsonb refused it: {why}]"


def refused_for_data(exc: psycopg.Error) -> bool:
    """True when PostgreSQL (or psycopg, adapting) will not store a value; not for a lost connection or a schema."""
    return isinstance(exc, psycopg.DataError) or (exc.sqlstate or "")[:2] in DATA_CLASSES


def _params(job: Job, b: BadRow, row: Jsonb, error: str) -> tuple:
    return job.job_id, job.table, b.position, row, b.sqlstate, b.column, error


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def _verbatim(text: str) -> str:
    return text
