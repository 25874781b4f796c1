"""The gateway's HTTP application: create_app(cfg) builds it; handlers live here too.

Routes:
  POST /v1/ingest/{table}   rows in, 202 {"job_id", "rows", "status_url"} out
                            (?wait=true: 200 with the final job, or 504 while it is still pending)
  GET  /v1/jobs/{job_id}    the job's state: accepted | committed | failed (404 not_found)
  GET  /healthz             200 once the catalog is loaded and the sockets are bound,
                            with the number of sinks connected
  GET  /metrics             Prometheus text format
  GET  /openapi.json        this API, described (gateway/openapi.py)

Set-up and tear-down of the database handle, the journal and the ZeroMQ
pipeline are paired in ``cleanup_ctx``; their state is typed with ``web.AppKey``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import psycopg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.config import Config
from common.wire import (MAX_IDEMPOTENCY_KEY_LEN, Job, JobState, WireError, decode_job, encode_job,
                         idempotency_key_ok)
from gateway.catalog import Table
from gateway.db import Database
from gateway.errors import BodyError
from gateway.formats import MEDIA_TYPES, Limits, parse_body, read_body
from gateway.limits import Hold, InflightBytes, InflightFull
from gateway.journal import Journal
from gateway.metrics import GatewayMetrics
from gateway.openapi import spec
from gateway.pipeline import Pipeline
from gateway.store import JobRecord, JobStore, KeyLocks

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", JobStore)
PIPELINE = web.AppKey("pipeline", Pipeline)
JOURNAL = web.AppKey("journal", Journal)
METRICS = web.AppKey("metrics", GatewayMetrics)
KEY_LOCKS = web.AppKey("key_locks", KeyLocks)
LIMITS = web.AppKey("limits", Limits)
INFLIGHT = web.AppKey("inflight", InflightBytes)

# What new_job_id makes; anything else cannot be in the ledger, so it is not looked up.
JOB_ID = re.compile(r"[0-9a-f]{32}")

_REFUSALS = {
    "stopping": "the gateway is stopping; retry later, on a new connection",
    "no_sink": "no sink is connected to take the job; retry later",
    "sinks_full": "every sink is busy; retry later",
    "buffer_full": "the gateway holds as much unfinished work as it may; retry later",
    "inflight": "the gateway is reading as many request bodies as it may (gateway.max_inflight_bytes); retry later",
}


def new_job_id() -> str:
    """Time-ordered and unique across gateways: 48 bits of milliseconds, then 80 random bits."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"  # urandom: what secrets reads too


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def job_view(rec: JobRecord) -> dict[str, Any]:
    return {
        "job_id": rec.job_id,
        "table": rec.table,
        "state": rec.state.value,
        "rows": rec.rows,
        "rows_committed": rec.rows_committed,
        "rows_rejected": rec.rows_rejected,
        "accepted_at": _iso(rec.accepted_at),
        # A failed job committed nothing: its committed_at stays null.
        "committed_at": _iso(rec.committed_at) if rec.state in (JobState.COMMITTED, JobState.PARTIAL) else None,
        "error": rec.error,
        "errors": [{"row": e.row, "column": e.column, "sqlstate": e.sqlstate, "message": e.message}
                   for e in rec.errors],
    }


def unavailable(app: web.Application, reason: str, text: str) -> web.Response:
    app[METRICS].refused.labels(reason).inc()
    response = json_response({"error": text}, 503, {"Retry-After": str(app[CONFIG].gateway.retry_after_s)})
    if reason == "stopping":
        response.force_close()  # a keep-alive client's next request then finds a gateway that serves
    return response


_WAIT_WORDS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def wants_wait(request: web.Request) -> bool:
    """?wait=true|false (1/0, yes/no, any case; absent: false); wait_error has refused anything else."""
    return _WAIT_WORDS.get(request.query.get("wait", "false").lower(), False)


def wait_error(request: web.Request) -> str | None:
    """Why the request's ?wait cannot be read, or None."""
    values = request.query.getall("wait", [])
    if len(values) > 1:
        return "wait is given more than once; give it once"
    if values and values[0].lower() not in _WAIT_WORDS:
        return f"wait must be true or false, got {values[0][:40]!r}"
    return None


async def _answer_job(request: web.Request, rec: JobRecord, replayed: bool = False) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if wants_wait(request):
        if rec.state.final:  # e.g. an earlier job found in the ledger
            return json_response(job_view(rec), 200, headers)
        final = await request.app[STORE].wait_final(rec.job_id, request.app[CONFIG].gateway.wait_timeout_s)
        if final is None:
            return json_response(job_view(rec), 504, headers)
        return json_response(job_view(final), 200, headers)
    return json_response({"job_id": rec.job_id, "rows": rec.rows, "status_url": f"/v1/jobs/{rec.job_id}"},
                         202, headers)


async def _earlier_job(app: web.Application, table: str, key: str) -> JobRecord | None:
    """The job a previous request with this Idempotency-Key created, from memory or the ledger."""
    job_id = app[STORE].job_for_key(table, key)
    if job_id is not None:
        rec = app[STORE].get(job_id) or await app[DATABASE].ledger(job_id)
        if rec is not None:
            return rec
    return await app[DATABASE].ledger_by_key(table, key)


async def ingest(request: web.Request) -> web.Response:
    app = request.app
    name = request.match_info["table"]
    try:
        table = await app[DATABASE].table(name)
    except psycopg.OperationalError:
        return unavailable(app, "database", "the database cannot be reached to check the table; retry later")
    if table is None:
        return json_response({"error": f"unknown table {name!r}"}, 404)
    if (bad_wait := wait_error(request)) is not None:
        return json_response({"error": bad_wait}, 400)
    if request.content_type not in MEDIA_TYPES:
        return json_response(
            {"error": f"unsupported media type {request.content_type!r}; send one of {', '.join(MEDIA_TYPES)}"}, 415
        )

    keys = request.headers.getall("Idempotency-Key", [])
    if len(keys) > 1:
        return json_response({"error": "more than one Idempotency-Key header; send one"}, 400)
    key = keys[0] if keys else None
    if key is not None and not idempotency_key_ok(key):
        return json_response({"error": f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable "
                                       "ASCII characters"}, 400)
    hold = Hold(app[INFLIGHT])  # grows as the body arrives
    try:
        outcome = await _read_and_admit(request, name, table, key, hold)
    finally:
        hold.release()  # the body and its parsed rows are gone with _read_and_admit's frame
    if isinstance(outcome, web.Response):
        return outcome
    rec, replayed = outcome
    if replayed:
        app[METRICS].idempotent_replays.inc()
    return await _answer_job(request, rec, replayed)  # ?wait=true waits here, holding no body


async def _read_and_admit(request: web.Request, name: str, table: Table, key: str | None,
                          hold: Hold) -> web.Response | tuple[JobRecord, bool]:
    """Read the body, then the job it makes (or the earlier job of its Idempotency-Key): (job, replayed)."""
    app = request.app
    try:
        # Read the whole body first, outside any key's lock: a slow upload must not hold up a retry.
        body = await read_body(request, app[LIMITS], hold)  # decompressed, never past gateway.max_body_bytes
    except InflightFull:
        return unavailable(app, "inflight", _REFUSALS["inflight"])
    except BodyError as exc:  # LimitError (413, 408, 400) and UnsupportedEncoding (415) carry their status
        return json_response(exc.as_json(), exc.status)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        # Nothing was accepted. An answer nobody reads (aiohttp drops it quietly) rather than an
        # exception, which aiohttp would log as an error with its traceback, once per disconnect.
        log.debug("client left before its body was read; nothing was accepted")
        return json_response({"error": "the connection closed before the body arrived"}, 400)
    if key is None:
        accepted = await _accept(request, name, table, None, body)
        return accepted if isinstance(accepted, web.Response) else (accepted, False)
    # One request per (table, key) at a time: a concurrent retry waits, then finds the first job.
    async with app[KEY_LOCKS].hold((name, key)):
        try:
            earlier = await _earlier_job(app, name, key)
        except psycopg.OperationalError:
            earlier = None  # the ledger's unique (table, key) index still stops a second landing
        if earlier is not None:
            return earlier, True
        accepted = await _accept(request, name, table, key, body)
        return accepted if isinstance(accepted, web.Response) else (accepted, False)


async def _accept(request: web.Request, name: str, table: Table, key: str | None,
                  body: bytes) -> JobRecord | web.Response:
    """Parse, check, journal and dispatch one request's rows: the job's record, or the error answer."""
    app = request.app
    limits = app[LIMITS]
    try:
        try:
            groups = parse_body(body, request.content_type, table, limits)
        except BodyError as exc:
            # A column added or retyped since the catalog was read: read it again (rate-limited), retry once.
            # With the database out of reach, the catalog at hand decides.
            try:
                if exc.column is None or not await app[DATABASE].refresh_soon():
                    raise
            except psycopg.OperationalError as down:
                log.warning("catalog re-read failed (%s); checking against the catalog at hand", down)
                raise exc from None
            table = await app[DATABASE].table(name)
            if table is None:
                return json_response({"error": f"unknown table {name!r}"}, 404)
            groups = parse_body(body, request.content_type, table, limits)
    except BodyError as exc:
        return json_response(exc.as_json(), exc.status)
    pipeline = app[PIPELINE]
    reason = pipeline.refusal()
    if reason is not None:
        return unavailable(app, reason, _REFUSALS[reason])
    job = Job(new_job_id(), name, time.time(), groups, key)
    try:
        frame = encode_job(job)
    except WireError as exc:
        return json_response({"error": f"a value cannot be sent: {exc}"}, 400)
    rec = JobRecord(job.job_id, name, job.row_count, job.accepted_at, frame=frame)
    store = app[STORE]
    if key is not None:
        store.remember_key(name, key, job.job_id)
    if JOURNAL in app:
        try:
            await app[JOURNAL].append(job.job_id, rec.frame)
        except OSError as exc:
            if key is not None:
                store.forget_key(name, key)
            log.error("journal write failed: %s", exc)
            return unavailable(app, "journal", "the gateway cannot record the job durably; retry later")
    pipeline.dispatch(rec)
    app[METRICS].jobs_accepted.inc()
    app[METRICS].rows_accepted.inc(rec.rows)
    return rec


async def job_status(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    wanted = job_id.lower()  # hex digits, in either case
    rec = request.app[STORE].get(wanted)
    if rec is None and JOB_ID.fullmatch(wanted):
        try:
            rec = await request.app[DATABASE].ledger(wanted)
        except psycopg.OperationalError:
            return unavailable(request.app, "database", "the job is not in memory and the ledger cannot be reached")
    if rec is None:
        return json_response({"job_id": job_id, "state": "not_found", "error": "no such job"}, 404)
    return json_response(job_view(rec))


async def healthz(request: web.Request) -> web.Response:
    return json_response({
        "status": "ok",
        "pid": os.getpid(),
        "sinks_connected": request.app[PIPELINE].sinks_connected,
        "pending_jobs": len(request.app[STORE].pending),
    })


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m, store = app[METRICS], app[STORE]
    m.pending_jobs.set(len(store.pending))
    m.pending_rows.set(store.pending_rows)
    m.pending_bytes.set(store.pending_bytes)
    if JOURNAL in app:
        m.journal_bytes.set(app[JOURNAL].size_bytes)
    return web.Response(body=generate_latest(m.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def count_responses(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    route = request.match_info.route.resource
    label = route.canonical if route is not None else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # aiohttp's own answers (404, 405, 413, ...) get a JSON body like every other error here.
        response = exc if exc.status < 400 else json_response({"error": exc.text or exc.reason}, exc.status,
                                                               {k: v for k, v in exc.headers.items()
                                                                if k.lower() in ("allow", "retry-after")})
    request.app[METRICS].requests.labels(label, str(response.status)).inc()
    if isinstance(response, web.HTTPException):
        raise response
    return response


async def _replay(app: web.Application, journal: Journal) -> list[JobRecord]:
    """Jobs the journal holds that the ledger does not: accepted before a stop, not yet final."""
    jobs: dict[str, tuple[Job, bytes]] = {}
    for frame in journal.replay():
        try:
            job = decode_job(frame)
        except WireError as exc:
            log.error("journal: skipping a record that is not a job: %s", exc)
            continue
        jobs[job.job_id] = (job, frame)
    done = await app[DATABASE].recorded(list(jobs)) if jobs else set()
    keep = [(job_id, frame) for job_id, (_, frame) in jobs.items() if job_id not in done]
    journal.open(keep)
    records = []
    for job_id, frame in keep:
        job = jobs[job_id][0]
        records.append(JobRecord(job_id, job.table, job.row_count, job.accepted_at, frame=frame))
        if job.idempotency_key is not None:
            app[STORE].remember_key(job.table, job.idempotency_key, job_id)
    log.info("journal: %d jobs replayed, %d already in the ledger, %d to send again",
             len(jobs), len(done), len(keep))
    return records


async def _resources(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    db = Database(cfg.database.dsn, cfg.gateway.tables)
    await db.open()
    app[DATABASE] = db
    journal = None
    replayed: list[JobRecord] = []
    if cfg.gateway.durability == "disk":
        journal = Journal(cfg.path(cfg.gateway.journal_dir), cfg.gateway.journal_segment_bytes)
        replayed = await _replay(app, journal)
        app[JOURNAL] = journal
    pipeline = Pipeline(cfg.gateway, app[STORE], app[METRICS], journal.done if journal else lambda _: None)
    app[PIPELINE] = pipeline
    pipeline.start()
    for rec in replayed:
        pipeline.dispatch(rec)
    yield
    await pipeline.close()
    if journal is not None:
        await journal.close()
    await db.close()


def create_app(cfg: Config) -> web.Application:
    g = cfg.gateway
    # Bodies are read (and decompressed, within the limit) by gateway.formats.read_body, not by aiohttp.
    app = web.Application(client_max_size=g.max_body_bytes, middlewares=[count_responses],
                          handler_args={"auto_decompress": False})
    app[CONFIG] = cfg
    app[LIMITS] = Limits(g.max_body_bytes, g.max_rows, g.max_depth, g.max_string_bytes, g.body_timeout_s)
    app[INFLIGHT] = InflightBytes(g.max_inflight_bytes)
    app[STORE] = JobStore(cfg.gateway.status_capacity, cfg.gateway.idempotency_ttl_s)
    app[METRICS] = GatewayMetrics()
    app[KEY_LOCKS] = KeyLocks()
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/ingest/{table}", ingest)
    app.router.add_get("/v1/jobs/{job_id}", job_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    described = orjson.dumps(spec(MEDIA_TYPES))
    app.router.add_get("/openapi.json", lambda request: web.Response(body=described,
                                                                     content_type="application/json"))
    return app
