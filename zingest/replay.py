"""`zingest replay`: send a table's dead letters back through the gateway, then remove them.

``zingest replay --table T [--job JOB_ID] [--config PATH] [--dsn DSN] [--url URL] [--dry-run] [--batch-rows N]``

Once the cause is fixed, the rows kept in ``zingest.dead_letters`` are posted
again as NDJSON (``"row"`` as stored; jsonb keeps numbers exact) through
zingest.send's client, so they are checked, defaulted and landed like new rows,
under new jobs. A batch holds dead letters of one original job, cut in id order
into runs of ``--batch-rows``: deleting any whole batches leaves the others cut
the same way, so a later run rebuilds, with the same Idempotency-Key, any batch
an interrupted run sent (the key names the job too, since ids may restart
after a TRUNCATE while the ledger keeps keys for good). A batch's entries are
deleted by id, in one transaction, once the gateway reports its job final and
the ledger holds its key: that job's transaction landed the rows or
dead-lettered them anew. Exit codes: 0 every row landed, 1 some were refused
again or not replayed, 2 usage, database or gateway errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import psycopg

from common.config import ConfigError, load_config
from zingest import embedded, send

_SELECT = """SELECT id, job_id, sqlstate, error, "row"::text FROM zingest.dead_letters
 WHERE table_name = %s AND (%s::text IS NULL OR job_id = %s) ORDER BY id"""
_CARRIED = """SELECT idempotency_key, job_id,
       coalesce(rows_committed, CASE WHEN state = 'committed' THEN rows ELSE 0 END), rows_rejected
  FROM zingest.ledger WHERE table_name = %s AND idempotency_key = ANY(%s::text[])"""
_DELETE = "DELETE FROM zingest.dead_letters WHERE id = ANY(%s::bigint[])"
FINAL = (send.Outcome.COMMITTED, send.Outcome.PARTIAL, send.Outcome.FAILED)

EPILOG = """\
Safe to run again. A batch's old entries are deleted (by id, in one transaction) only once the
gateway has reported its job committed, partial or failed and the ledger holds it; rows refused
again are new dead letters of the new job. If replay stops between sending and deleting (a crash,
Ctrl-C, a lost database), the old entries stay, and the next replay sends them again with the same
Idempotency-Key (replay:<table>:<job>:<first id>-<last id>:<count>): the gateway answers with the
first job instead of landing the rows twice, and the entries are deleted then. Keep --batch-rows
the same when running again, or jobs with more than N dead letters are cut (and keyed) differently."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    job_id: str
    sqlstate: str | None
    error: str
    row: str  # the row as sent: a JSON object, as text


@dataclass(frozen=True, slots=True)
class ReplayBatch:
    key: str
    ids: tuple[int, ...]
    batch: send.Batch  # its first_line is the first dead letter's id, which names the batch in a Result


@dataclass
class Tally:
    carried: set[str] = field(default_factory=set)  # keys of the batches whose entries were deleted
    replayed: int = 0
    jobs: int = 0
    landed: int = 0
    refused: int = 0


def plan(table: str, letters: list[DeadLetter], batch_rows: int) -> list[ReplayBatch]:
    """Per original job, in id order, runs of ``batch_rows`` dead letters, each with its key."""
    by_job: dict[str, list[DeadLetter]] = {}
    for letter in sorted(letters, key=lambda d: d.id):
        by_job.setdefault(letter.job_id, []).append(letter)
    batches = []
    for job_id, group in by_job.items():
        for start in range(0, len(group), batch_rows):
            ids = tuple(d.id for d in group[start : start + batch_rows])
            body = "".join(d.row + "\n" for d in group[start : start + batch_rows]).encode()
            key = f"replay:{table}:{job_id}:{ids[0]}-{ids[-1]}:{len(ids)}"
            batches.append(ReplayBatch(key, ids, send.Batch(ids[0], len(ids), body)))
    return batches


def read_dead_letters(dsn: str, table: str, job: str | None) -> list[DeadLetter]:
    with psycopg.connect(dsn, application_name="zingest-replay") as conn:
        return [DeadLetter(*r) for r in conn.execute(_SELECT, (table, job, job)).fetchall()]


async def send_batches(batches: list[ReplayBatch], options: send.Options) -> list[send.Result]:
    """Post every batch with its Idempotency-Key, then wait until each job is final (or the timeout)."""
    await send.check_reachable(options.url)
    ingest_url = f"{options.url}/v1/ingest/{quote(options.table, safe='')}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=options.concurrency)) as session:

        async def post(b: ReplayBatch) -> send.Result:
            return await send.post_batch(session, ingest_url, b.batch, options.timeout_s, idempotency_key=b.key)

        posted = await send.bounded_map(post, batches, options.concurrency)
        return await send.wait_for_jobs(session, f"{options.url}/v1/jobs", posted, options)


def remove_carried(dsn: str, table: str, batches: list[ReplayBatch], results: list[send.Result]) -> Tally:
    """In one transaction, delete the entries of every batch whose job the gateway called final and the ledger holds."""
    final = {r.first_line for r in results if r.job_id is not None and r.outcome in FINAL}
    by_key = {b.key: b for b in batches if b.batch.first_line in final}
    tally, jobs = Tally(), set()
    with psycopg.connect(dsn, application_name="zingest-replay") as conn, conn.transaction():
        for key, job_id, landed, refused in conn.execute(_CARRIED, (table, list(by_key))).fetchall():
            tally.carried.add(key)
            tally.replayed += len(by_key[key].ids)
            tally.landed, tally.refused = tally.landed + landed, tally.refused + refused
            jobs.add(job_id)
        conn.execute(_DELETE, ([i for key in tally.carried for i in by_key[key].ids],))
    tally.jobs = len(jobs)
    return tally


def report(table: str, tally: Tally, kept: list[tuple[ReplayBatch, send.Result | None]]) -> list[str]:
    note = " (see zingest.dead_letters)" if tally.refused else ""
    out = [(f"replayed {tally.replayed} dead letters of {table} in {tally.jobs} jobs: "
            f"{tally.landed} landed, {tally.refused} refused again{note}")]
    for b, r in kept:
        why = r.error if r is not None and r.error else "its job is not final in the ledger yet"
        out.append(f"kept {len(b.ids)} dead letters (ids {b.ids[0]}-{b.ids[-1]}), to replay again: {why}")
    return out


def dry_run(table: str, letters: list[DeadLetter], batches: list[ReplayBatch]) -> list[str]:
    first = {d.sqlstate: d.error for d in reversed(letters)}
    out = [f"would replay {len(letters)} dead letters of {table} in {len(batches)} jobs; by sqlstate:"]
    return out + [f"  {s or '-----'}  {n:>8}  {first[s]}" for s, n in Counter(d.sqlstate for d in letters).most_common()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zingest replay", epilog=EPILOG, formatter_class=argparse.RawTextHelpFormatter,
                                description="Send a table's dead letters back through the gateway, then remove them.")
    p.add_argument("--table", required=True, help="the table whose dead letters to replay")
    p.add_argument("--job", metavar="JOB_ID", help="only the dead letters of this job")
    p.add_argument("--config", metavar="PATH", help="config.toml: database.dsn and gateway.listen")
    p.add_argument("--dsn", help="PostgreSQL holding zingest.dead_letters (default: database.dsn, else the"
                                 " embedded server of a running `zingest up`)")
    p.add_argument("--url", help=f"gateway base URL (default: gateway.listen of --config or ZINGEST_GATEWAY__LISTEN, else {send.DEFAULT_URL})")
    p.add_argument("--dry-run", action="store_true", help="count what would be replayed, by sqlstate; send nothing")
    p.add_argument("--batch-rows", type=send.positive_int, default=send.DEFAULT_BATCH_ROWS, metavar="N",
                   help=f"most dead letters per POST (default {send.DEFAULT_BATCH_ROWS}); keep it when running again")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"zingest replay: {message}", file=sys.stderr)
        return send.EXIT_USAGE

    try:
        cfg = load_config(args.config)
        # Else the embedded server a running `zingest up` started, found through the DSN it keeps in var/.
        dsn = args.dsn or cfg.database.dsn or embedded.running_dsn(cfg.path(cfg.database.embedded_dir))
        options = send.Options(send.gateway_url(args.url, args.config), args.table)
    except ConfigError as exc:
        return fail(str(exc))
    if not dsn:
        return fail("no database: pass --dsn, or set database.dsn in --config (or ZINGEST_DATABASE__DSN),"
                    " or run it beside `zingest up` on the embedded database")
    try:
        letters = read_dead_letters(dsn, args.table, args.job)
        batches = plan(args.table, letters, args.batch_rows)
        if args.dry_run or not letters:
            print("\n".join(dry_run(args.table, letters, batches)) if letters else f"no dead letters of {args.table}")
            return send.EXIT_OK
        results = asyncio.run(send_batches(batches, options))
        tally = remove_carried(dsn, args.table, batches, results)
    except psycopg.Error as exc:
        return fail(f"database error (entries not yet removed are sent again by the next replay): {exc}")
    except send.GatewayUnreachable as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("zingest replay: interrupted; entries not yet removed are sent again by the next replay", file=sys.stderr)
        return send.EXIT_INTERRUPTED
    by_first = {r.first_line: r for r in results}
    kept = [(b, by_first.get(b.batch.first_line)) for b in batches if b.key not in tally.carried]
    print("\n".join(report(args.table, tally, kept)))
    return send.EXIT_OK if tally.refused == 0 and not kept else send.EXIT_INCOMPLETE
