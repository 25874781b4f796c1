"""The original design's API, in Python: LPUSH each request onto a Redis list, answer 202 with a job id.

Binds 127.0.0.1:``--port``; connects to Redis at ``--redis`` (``host:port``)
and pushes onto list ``--queue``. The item is the job id, a newline, then the
request body as received; :mod:`benchmarks.servers.redisworker` pops and
INSERTs it. The body is not parsed here: the Go service zingest descends from
checked nothing before answering either.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from aiohttp import web

from benchmarks.servers.common import answer, job_id, parser, serve

REDIS = web.AppKey("redis", aioredis.Redis)
QUEUE = web.AppKey("queue", str)


async def ingest(request: web.Request) -> web.Response:
    body = await request.read()
    jid = job_id()
    await request.app[REDIS].lpush(request.app[QUEUE], jid.encode() + b"\n" + body)
    return answer({"job_id": jid, "status_url": f"/v1/jobs/{jid}"}, 202)


def main(argv: list[str] | None = None) -> int:
    p = parser("redisapi", "LPUSH each request onto a Redis list; answer 202 with a job id.")
    p.add_argument("--redis", required=True, help="host:port")
    p.add_argument("--queue", required=True, help="name of the Redis list")
    args = p.parse_args(argv)
    host, _, port = args.redis.rpartition(":")

    async def connect(app: web.Application) -> AsyncIterator[None]:
        client = aioredis.Redis(host=host, port=int(port), max_connections=256)
        await client.ping()
        app[REDIS] = client
        yield
        await client.aclose()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[QUEUE] = args.queue
    app.cleanup_ctx.append(connect)
    app.router.add_post("/v1/ingest/{table}", ingest)
    return serve(app, args.port)


if __name__ == "__main__":
    sys.exit(main())
