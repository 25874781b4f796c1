"""zingest.embedded: stop() leaves no PostgreSQL running, also after restart() (what the fault tests do
to the session's server): a server left behind outlives the test run, holding memory and a socket.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import psutil

from tests.conftest import wait_until
from zingest.embedded import EmbeddedPostgres, running_dsn


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def test_stop_after_restart_leaves_no_server(tmp_path: Path) -> None:
    data = tmp_path / "pg"
    server = EmbeddedPostgres(data)
    dsn = server.start()
    try:
        assert running_dsn(data) == dsn
        first = postmaster_pid(data)
        server.restart()
        second = postmaster_pid(data)
        assert second != first and psutil.pid_exists(second)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert not (data / "postmaster.pid").exists()
    assert wait_until(lambda: not psutil.pid_exists(second) or psutil.Process(second).status() == "zombie",
                      10, what="the restarted postmaster to exit")
    assert running_dsn(data) is None
    assert os.listdir(data)  # the data folder is kept (it is the user's database)
