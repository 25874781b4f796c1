"""Naive direct insert: INSERT each request's rows (executemany, one transaction), then answer 200.

Binds 127.0.0.1:``--port``; connects to ``--dsn`` with ``--connections``
connections, handed out from a queue (at most that many requests write at once;
the others wait for a connection). What most people write first.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import psycopg
from aiohttp import web

from benchmarks.servers.common import INSERT, answer, params, parser, serve

POOL = web.AppKey("pool", asyncio.Queue)


async def ingest(request: web.Request) -> web.Response:
    rows = params(await request.read())
    pool = request.app[POOL]
    conn: psycopg.AsyncConnection = await pool.get()
    try:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(INSERT, rows)
    finally:
        pool.put_nowait(conn)
    return answer({"rows": len(rows)}, 200)


def main(argv: list[str] | None = None) -> int:
    p = parser("naive", "INSERT each request's rows before answering.")
    p.add_argument("--dsn", required=True)
    p.add_argument("--connections", type=int, default=4)
    args = p.parse_args(argv)

    async def connections(app: web.Application) -> AsyncIterator[None]:
        pool: asyncio.Queue[psycopg.AsyncConnection] = asyncio.Queue()
        conns = [await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) for _ in range(args.connections)]
        for conn in conns:
            pool.put_nowait(conn)
        app[POOL] = pool
        yield
        for conn in conns:
            await conn.close()

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.cleanup_ctx.append(connections)
    app.router.add_post("/v1/ingest/{table}", ingest)
    return serve(app, args.port)


if __name__ == "__main__":
    sys.exit(main())
