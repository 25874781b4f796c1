"""What the alternative services share: arguments, the INSERT statement, body decoding, serving.

Each service is an aiohttp application on uvloop, as zingest's gateway is, so
the comparison is between designs, not event loops.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import time
from typing import Any

import orjson
import uvloop
from aiohttp import web

from benchmarks.data import SENT_COLUMNS, TABLE

INSERT = (f"INSERT INTO public.{TABLE} ({', '.join(SENT_COLUMNS)}) "
          f"VALUES ({', '.join(['%s'] * len(SENT_COLUMNS))})")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    return p


def job_id() -> str:
    """Shaped like zingest's: 48 bits of milliseconds, then 80 random bits, as 32 hex digits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def params(body: bytes) -> list[tuple[Any, ...]]:
    """A JSON object or array of objects to INSERT parameters in :data:`SENT_COLUMNS` order."""
    doc = orjson.loads(body)
    rows = [doc] if isinstance(doc, dict) else doc
    return [tuple(r.get(c) for c in SENT_COLUMNS) for r in rows]


def answer(data: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return answer({"status": "ok"}, 200)


async def _serve(app: web.Application, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await stop.wait()
    await runner.cleanup()


def serve(app: web.Application, port: int) -> int:
    """Serve ``app`` on 127.0.0.1:``port`` with uvloop until SIGTERM or SIGINT."""
    app.router.add_get("/healthz", healthz)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(app, port))
    return 0
