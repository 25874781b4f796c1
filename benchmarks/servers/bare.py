"""The HTTP ceiling: an aiohttp handler that reads the body and answers 202, and does nothing else.

Binds 127.0.0.1:``--port``. ``POST /v1/ingest/{table}`` answers 202 with a job
id shaped like zingest's, so the response is the same size; ``GET /healthz``.
"""

from __future__ import annotations

import sys

from aiohttp import web

from benchmarks.servers.common import answer, job_id, parser, serve


async def ingest(request: web.Request) -> web.Response:
    body = await request.read()
    jid = job_id()
    return answer({"job_id": jid, "bytes": len(body), "status_url": f"/v1/jobs/{jid}"}, 202)


def main(argv: list[str] | None = None) -> int:
    args = parser("bare", "Read the body, answer 202.").parse_args(argv)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/ingest/{table}", ingest)
    return serve(app, args.port)


if __name__ == "__main__":
    sys.exit(main())
