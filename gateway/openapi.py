"""The gateway's OpenAPI 3.0 description, served at GET /openapi.json.

Written by hand, next to the handlers it describes (gateway/app.py); the test
suite runs a schema-driven fuzzer (schemathesis) against a live gateway with
it, so a handler that answers outside this description fails the build.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "line": {"type": "integer", "description": "NDJSON or CSV line (from 1) at fault"},
        "index": {"type": "integer", "description": "position (from 0) in a JSON or msgpack array at fault"},
        "column": {"type": "string", "description": "column at fault"},
        "limit": {"type": "string", "description": "the gateway.max_* setting a 413 or 400 is about"},
    },
}

_ROW_ERROR = {
    "type": "object",
    "required": ["row", "column", "sqlstate", "message"],
    "properties": {
        "row": {"type": "integer", "description": "position (from 0) among the job's rows"},
        "column": {"type": "string", "nullable": True},
        "sqlstate": {"type": "string", "nullable": True},
        "message": {"type": "string"},
    },
}

_JOB = {
    "type": "object",
    "required": ["job_id", "table", "state", "rows", "rows_committed", "rows_rejected", "accepted_at",
                 "committed_at", "error", "errors"],
    "properties": {
        "job_id": {"type": "string"},
        "table": {"type": "string"},
        "state": {"type": "string", "enum": ["accepted", "committed", "partial", "failed"]},
        "rows": {"type": "integer"},
        "rows_committed": {"type": "integer"},
        "rows_rejected": {"type": "integer"},
        "accepted_at": {"type": "string", "format": "date-time", "nullable": True},
        "committed_at": {"type": "string", "format": "date-time", "nullable": True},
        "error": {"type": "string", "nullable": True},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/RowError"}},
    },
}

_ACCEPTED = {
    "type": "object",
    "required": ["job_id", "rows", "status_url"],
    "properties": {
        "job_id": {"type": "string"},
        "rows": {"type": "integer"},
        "status_url": {"type": "string"},
    },
}

_NOT_FOUND = {
    "type": "object",
    "required": ["job_id", "state", "error"],
    "properties": {
        "job_id": {"type": "string"},
        "state": {"type": "string", "enum": ["not_found"]},
        "error": {"type": "string"},
    },
}


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
    return out


def _json(ref: str, description: str, replayed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}
    if replayed:
        out["headers"] = {"Idempotent-Replayed": {
            "schema": {"type": "string", "enum": ["true"]},
            "description": "present when the answer is the job an earlier request with this Idempotency-Key created",
        }}
    return out


def spec(media_types: tuple[str, ...]) -> dict[str, Any]:
    row = {"type": "object", "description": "column name -> value", "additionalProperties": True}
    bodies: dict[str, Any] = {}
    for media in media_types:
        if media == "application/json":
            bodies[media] = {"schema": {"oneOf": [row, {"type": "array", "items": row}]}}
        else:
            bodies[media] = {"schema": {"type": "string", "format": "binary"}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "zingest gateway",
            "version": "1",
            "description": "Rows in over HTTP, a job id out at once; sinks COPY them into PostgreSQL.",
        },
        "paths": {
            "/v1/ingest/{table}": {
                "post": {
                    "operationId": "ingest",
                    "summary": "Accept rows for a table as one job",
                    "parameters": [
                        {"name": "table", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "wait", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": ["true", "false", "1", "0"]},
                         "description": "true: answer once the job is final (200), or 504 after the wait limit (also yes/no, in any case; any other value: 400)"},
                        {"name": "Idempotency-Key", "in": "header", "required": False,
                         "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                         "description": "a retry with the same key returns the first job"},
                        {"name": "Content-Encoding", "in": "header", "required": False,
                         "schema": {"type": "string"},
                         "description": "identity, gzip (or x-gzip) or deflate; anything else is 415"},
                    ],
                    "requestBody": {"required": True, "content": bodies},
                    "responses": {
                        "200": _json("#/components/schemas/Job", "?wait=true: the job, final", replayed=True),
                        "202": _json("#/components/schemas/Accepted", "accepted as a job", replayed=True),
                        "400": _error("a row, a value or the body is not acceptable; names where"),
                        "404": _error("no such table (or not in gateway.tables)"),
                        "408": _error("the body did not arrive within gateway.body_timeout_s"),
                        "413": _error("body or row count over its limit"),
                        "415": _error("media type or content encoding not accepted"),
                        "503": _error("no sink connected, buffers full, too many bodies in flight, or the gateway stopping:"
                                      " retry after Retry-After",
                                      retry_after=True),
                        "504": _json("#/components/schemas/Job", "?wait=true: not final in time; still tracked"),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "operationId": "job",
                    "summary": "A job's state",
                    "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json("#/components/schemas/Job", "the job"),
                        "404": _json("#/components/schemas/NotFound", "no job with this id was ever issued"),
                        "503": _error("not in memory and the ledger cannot be reached", retry_after=True),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": {"description": "serving", "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["status", "sinks_connected", "pending_jobs"],
                        "properties": {"status": {"type": "string"}, "pid": {"type": "integer"},
                                       "sinks_connected": {"type": "integer"},
                                       "pending_jobs": {"type": "integer"}},
                    }}}}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "responses": {"200": {"description": "Prometheus text format",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}},
                }
            },
        },
        "components": {
            "schemas": {
                "Error": _ERROR,
                "RowError": _ROW_ERROR,
                "Job": _JOB,
                "Accepted": _ACCEPTED,
                "NotFound": _NOT_FOUND,
            }
        },
    }
