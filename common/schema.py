"""zingest's own tables in schema ``zingest``: the ledger of jobs, and the dead letters.

The ledger is written in the same transaction as a job's rows, so the database
itself says which jobs are committed; a job already in it is never written again.
A row PostgreSQL refuses is kept in ``zingest.dead_letters`` as it was sent
(a JSON object of column -> value), with the SQLSTATE and message, in that
same transaction.
"""

from __future__ import annotations

import psycopg

# Any constant: serialises concurrent schema set-up by several sinks and gateways.
_SETUP_LOCK = 0x7A696E67
# Bumped whenever the DDL below changes; recorded as the schema's comment.
SCHEMA_VERSION = 3
_MARK = f"zingest schema {SCHEMA_VERSION}"
_CURRENT = "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'zingest'"

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS zingest;
CREATE TABLE IF NOT EXISTS zingest.ledger (
    job_id          text PRIMARY KEY,
    table_name      text NOT NULL,
    state           text NOT NULL,           -- committed | partial | failed
    rows            integer NOT NULL,        -- rows in the job
    accepted_at     timestamptz NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT now(),  -- when the job became final
    error           text,                    -- summary of what was refused
    idempotency_key text,
    rows_committed  integer,
    rows_rejected   integer NOT NULL DEFAULT 0,
    errors          jsonb                    -- the first refused rows: [{row, column, sqlstate, message}]
);
ALTER TABLE zingest.ledger ADD COLUMN IF NOT EXISTS idempotency_key text;
ALTER TABLE zingest.ledger ADD COLUMN IF NOT EXISTS rows_committed integer;
ALTER TABLE zingest.ledger ADD COLUMN IF NOT EXISTS rows_rejected integer NOT NULL DEFAULT 0;
ALTER TABLE zingest.ledger ADD COLUMN IF NOT EXISTS errors jsonb;
ALTER TABLE zingest.ledger DROP CONSTRAINT IF EXISTS ledger_state_check;
CREATE TABLE IF NOT EXISTS zingest.dead_letters (
    id          bigserial PRIMARY KEY,
    job_id      text NOT NULL,
    table_name  text NOT NULL,
    row_number  integer NOT NULL,            -- 0-based position of the row in the request
    "row"       jsonb NOT NULL,              -- the row as sent: {"column": value, ...}
    sqlstate    text,
    column_name text,
    error       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_job ON zingest.dead_letters (job_id);
CREATE INDEX IF NOT EXISTS dead_letters_table ON zingest.dead_letters (table_name, id);
-- A client's Idempotency-Key lands once per table, even when two gateways accepted it.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_idempotency_key
    ON zingest.ledger (table_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create or upgrade zingest's own schema and tables (safe to race).

    Runs the DDL only when the schema is missing or older: the ALTERs take an
    exclusive lock on the ledger, which must not queue behind (and stall) the
    sinks' open transactions every time a process starts or reconnects.
    """
    if _is_current(conn):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        if _is_current(conn):
            return
        conn.execute(LEDGER_DDL)
        conn.execute(f"COMMENT ON SCHEMA zingest IS '{_MARK}'")


def _is_current(conn: psycopg.Connection) -> bool:
    row = conn.execute(_CURRENT).fetchone()
    return row is not None and row[0] == _MARK
