"""`zingest gateway`: serve HTTP until SIGINT/SIGTERM, then stop intake and drain.

Shutdown order: stop listening, wait up to ``gateway.drain_timeout_s`` for
in-flight jobs to become final (a second signal cuts the wait short), then
close the ZeroMQ sockets and the database handle.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import psycopg
import uvloop
from aiohttp import web

from common.config import Config, ConfigError, load_config
from common.lifecycle import STOP_SIGNALS
from common.logs import setup_logging
from gateway.app import PIPELINE, STORE, create_app

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_START = 3

log = logging.getLogger("zingest.gateway")


async def serve(cfg: Config) -> int:
    loop = asyncio.get_running_loop()
    should_exit, force_exit = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if should_exit.is_set():
            force_exit.set()
        should_exit.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal)

    app = create_app(cfg)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    host, _, port = cfg.gateway.listen.rpartition(":")
    try:
        await runner.setup()
        site = web.TCPSite(runner, host, int(port))
        await site.start()
    except psycopg.ProgrammingError as exc:  # e.g. a DSN that is not a connection string
        log.error("database.dsn is not usable: %s", exc)
        await runner.cleanup()
        return EXIT_CONFIG
    except (OSError, psycopg.OperationalError) as exc:
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return EXIT_START
    log.info("gateway listening on http://%s", cfg.gateway.listen)

    await should_exit.wait()
    log.info("stopping: no new requests; draining in-flight jobs for up to %.1f s", cfg.gateway.drain_timeout_s)
    # Requests on open keep-alive connections still arrive while the jobs drain: they get 503.
    app[PIPELINE].stopping = True
    await site.stop()
    store = app[STORE]
    drained = asyncio.create_task(store.wait_idle())
    forced = asyncio.create_task(force_exit.wait())
    await asyncio.wait((drained, forced), timeout=cfg.gateway.drain_timeout_s, return_when=asyncio.FIRST_COMPLETED)
    drained.cancel()
    forced.cancel()
    p = app[PIPELINE]
    await runner.cleanup()  # requests still in flight finish here, and may add jobs
    left = len(store.pending)
    if not left:
        kept = "none pending"
    elif cfg.gateway.durability == "disk":
        kept = f"{left} still pending, kept in the journal (sent again at the next start)"
    else:
        kept = f"{left} still pending, lost from this gateway (durability = memory); sinks may still commit them"
    log.info("gateway stopped: %d jobs sent, %d final, %d redelivered; %s",
             p.jobs_sent, p.jobs_final, p.redelivered, kept)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zingest gateway", description="Serve the HTTP ingestion API.")
    parser.add_argument("--config", help="path to config.toml (default: built-in defaults)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        parser.exit(EXIT_CONFIG, f"zingest gateway: {exc}\n")
    setup_logging(cfg.log.level, "gateway")
    if not cfg.database.dsn:
        log.error("database.dsn is empty: a gateway needs a DSN (zingest up passes the embedded one)")
        return EXIT_CONFIG
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(cfg))
