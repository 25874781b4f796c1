"""zingest's own tables in schema ``zingest``: the ledger that records each job's fate.

The ledger is written in the same transaction as a job's rows, so the database
itself says which jobs are committed; a job already in it is never written again.
"""

from __future__ import annotations

import psycopg

# Any constant: serialises concurrent schema set-up by several sinks and gateways.
_SETUP_LOCK = 0x7A696E67

LEDGER_DDL = """
CREATE SCHEMA IF NOT EXISTS zingest;
CREATE TABLE IF NOT EXISTS zingest.ledger (
    job_id        text PRIMARY KEY,
    table_name    text NOT NULL,
    state         text NOT NULL CHECK (state IN ('committed', 'failed')),
    rows          integer NOT NULL,
    accepted_at   timestamptz NOT NULL,
    committed_at  timestamptz NOT NULL DEFAULT now(),
    error         text
);
ALTER TABLE zingest.ledger ADD COLUMN IF NOT EXISTS idempotency_key text;
-- A client's Idempotency-Key lands once per table, even when two gateways accepted it.
CREATE UNIQUE INDEX IF NOT EXISTS ledger_idempotency_key
    ON zingest.ledger (table_name, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create zingest's own schema and tables if they are missing (safe to race)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
        conn.execute(LEDGER_DDL)
