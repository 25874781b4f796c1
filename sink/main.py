"""`zingest sink`: run one sink process until SIGINT/SIGTERM (a second signal exits at once)."""

from __future__ import annotations

import argparse

import psycopg
from prometheus_client import start_http_server

from common.config import ConfigError, load_config
from common.lifecycle import StopFlags
from common.logs import setup_logging
from sink.runner import Sink

EXIT_OK = 0
EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zingest sink", description="PULL jobs, COPY them into PostgreSQL.")
    parser.add_argument("--config", help="path to config.toml (default: built-in defaults)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        parser.exit(EXIT_CONFIG, f"zingest sink: {exc}\n")
    log = setup_logging(cfg.log.level, "sink")
    if not cfg.database.dsn:
        log.error("database.dsn is empty: a sink needs a DSN (zingest up passes the embedded one)")
        return EXIT_CONFIG
    stop = StopFlags()
    stop.install()
    sink = Sink(cfg, cfg.database.dsn, stop)
    if cfg.sink.metrics_listen:
        host, _, port = cfg.sink.metrics_listen.rpartition(":")
        try:
            start_http_server(int(port), host, registry=sink.metrics.registry)
        except OSError as exc:
            # Metrics are for watching, not for landing rows: run without them rather than not at all.
            log.error("cannot serve metrics on %s (%s); running without /metrics", cfg.sink.metrics_listen, exc)
        else:
            log.info("metrics on http://%s/metrics", cfg.sink.metrics_listen)
    try:
        sink.run()
    except psycopg.ProgrammingError as exc:  # e.g. a DSN that is not a connection string
        log.error("database.dsn is not usable: %s", exc)
        return EXIT_CONFIG
    return EXIT_OK
