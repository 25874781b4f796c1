"""The gateway's HTTP application: create_app(cfg) builds it; handlers live here too.

Routes:
  POST /v1/ingest/{table}   rows in, 202 {"job_id", "rows", "status_url"} out
  GET  /v1/jobs/{job_id}    the job's state: accepted | committed | failed (404 not_found)
  GET  /healthz             200 once the catalog is loaded and the sockets are bound,
                            with the number of sinks connected

Set-up and tear-down of the database handle and the ZeroMQ pipeline are paired
in ``cleanup_ctx``; their state is typed with ``web.AppKey``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from aiohttp import web

from common.config import Config
from common.wire import Job, encode_job
from gateway.db import Database
from gateway.parsing import MEDIA_TYPES, BodyError, parse_rows
from gateway.pipeline import Pipeline
from gateway.store import JobRecord, JobStore

CONFIG = web.AppKey("config", Config)
DATABASE = web.AppKey("database", Database)
STORE = web.AppKey("store", JobStore)
PIPELINE = web.AppKey("pipeline", Pipeline)

MAX_JOB_ID_LEN = 64


def new_job_id() -> str:
    """Time-ordered and unique across gateways: 48 bits of milliseconds, then 80 random bits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


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
        "accepted_at": _iso(rec.accepted_at),
        "committed_at": _iso(rec.committed_at),
        "error": rec.error,
    }


def unavailable(cfg: Config, reason: str) -> web.Response:
    return json_response({"error": reason}, 503, {"Retry-After": str(cfg.gateway.retry_after_s)})


async def ingest(request: web.Request) -> web.Response:
    app = request.app
    cfg = app[CONFIG]
    name = request.match_info["table"]
    try:
        table = await app[DATABASE].table(name)
    except psycopg.OperationalError:
        return unavailable(cfg, "the database cannot be reached to check the table")
    if table is None:
        return json_response({"error": f"unknown table {name!r}"}, 404)
    if request.content_type not in MEDIA_TYPES:
        return json_response(
            {"error": f"unsupported media type {request.content_type!r}; send one of {', '.join(MEDIA_TYPES)}"}, 415
        )
    body = await request.read()  # aiohttp answers 413 past gateway.max_body_bytes
    try:
        groups = parse_rows(body, request.content_type, table)
    except BodyError as exc:
        return json_response(exc.as_json(), 400)
    job = Job(new_job_id(), name, time.time(), groups)
    rec = JobRecord(job.job_id, name, job.row_count, job.accepted_at, frame=encode_job(job))
    if not app[PIPELINE].submit(rec):
        return unavailable(cfg, "no sink can take the job now (none connected, or all full); retry later")
    return json_response(
        {"job_id": rec.job_id, "rows": rec.rows, "status_url": f"/v1/jobs/{rec.job_id}"}, 202
    )


async def job_status(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    rec = request.app[STORE].get(job_id)
    if rec is None and len(job_id) <= MAX_JOB_ID_LEN:
        try:
            rec = await request.app[DATABASE].ledger(job_id)
        except psycopg.OperationalError:
            return unavailable(request.app[CONFIG], "the job is not in memory and the ledger cannot be reached")
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


async def _resources(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG]
    db = Database(cfg.database.dsn, cfg.gateway.tables)
    await db.open()
    app[DATABASE] = db
    pipeline = Pipeline(cfg.gateway, app[STORE])
    pipeline.start()
    app[PIPELINE] = pipeline
    yield
    await pipeline.close()
    await db.close()


def create_app(cfg: Config) -> web.Application:
    app = web.Application(client_max_size=cfg.gateway.max_body_bytes)
    app[CONFIG] = cfg
    app[STORE] = JobStore(cfg.gateway.status_capacity)
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/ingest/{table}", ingest)
    app.router.add_get("/v1/jobs/{job_id}", job_status)
    app.router.add_get("/healthz", healthz)
    return app
