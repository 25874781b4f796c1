"""End to end through real processes: `zingest up` (gateway + sinks), `zingest send`, PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from datetime import datetime
from pathlib import Path

import orjson
import psycopg
import pytest

from tests.conftest import ROOT, child_env, stop_process, wait_until, zingest_cmd
from zingest.embedded import running_dsn
from zingest.gen import COLUMNS

ROWS = 20_000
TIMESTAMP_COLUMNS = ("from_date", "to_date", "booking_created")


def up_ready(log: Path) -> bool:
    """`zingest up` prints this line once the gateway serves and every sink is connected."""
    return log.exists() and "zingest is up:" in log.read_text()


def start_up(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.Popen:
    log = open(tmp_path / "up.log", "wb")
    return subprocess.Popen(
        zingest_cmd("up", "--config", str(ROOT / "config.toml"), *args),
        env=child_env(env), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )


def expected_row(obj: dict) -> tuple:
    values = []
    for name in COLUMNS:
        value = obj.get(name)
        if name in TIMESTAMP_COLUMNS and value is not None:
            value = datetime.fromisoformat(value)
        values.append(value)
    return tuple(values)


@pytest.mark.timeout(300)
def test_up_send_20000_rides_lands_every_row_exactly(rides_dsn: str, ports_env: dict[str, str],
                                                      tmp_path: Path) -> None:
    data = tmp_path / "rides.ndjson"
    subprocess.run(zingest_cmd("gen", "rides", "--rows", str(ROWS), "--seed", "7", "--output", str(data)),
                   check=True, env=child_env({}))
    env = {**ports_env, "ZINGEST_DATABASE__DSN": rides_dsn}
    url = f"http://{env['ZINGEST_GATEWAY__LISTEN']}"
    up = start_up(env, tmp_path, "--sinks", "2")
    try:
        wait_until(lambda: up_ready(tmp_path / "up.log") or up.poll() is not None, timeout=60,
                   what="zingest up to serve")
        assert up.poll() is None, (tmp_path / "up.log").read_text()

        sent = subprocess.run(
            zingest_cmd("send", str(data), "--table", "rides", "--url", url, "--batch-rows", "500", "--json"),
            capture_output=True, text=True, timeout=240, env=child_env({}),
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        summary = json.loads(sent.stdout)
        assert summary["rows"] == ROWS
        assert summary["committed_rows"] == ROWS
        assert summary["jobs"] == ROWS // 500
        assert summary["failed_jobs"] == [] and summary["rejected_batches"] == []
    finally:
        code = stop_process(up, timeout=60)
    log_text = (tmp_path / "up.log").read_text()
    assert code == 0, log_text
    assert "exited with" not in log_text, log_text  # every child stopped cleanly, none restarted

    expected = [expected_row(orjson.loads(line)) for line in data.read_bytes().splitlines()]
    with psycopg.connect(rides_dsn) as conn:
        got = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM rides ORDER BY id").fetchall()
        jobs, ledger_rows, states = conn.execute(
            "SELECT count(*), sum(rows), array_agg(DISTINCT state) FROM zingest.ledger"
        ).fetchone()
    assert len(got) == ROWS
    assert got == expected  # values, nulls and instants (timestamptz compares as instants)
    assert (jobs, ledger_rows, states) == (ROWS // 500, ROWS, ["committed"])
    # Time zones: the offsets sent are not all the same, and each landed as the same instant.
    offsets = {datetime.fromisoformat(orjson.loads(line)["from_date"]).utcoffset()
               for line in data.read_bytes().splitlines()}
    assert len(offsets) > 1


@pytest.mark.timeout(180)
def test_up_with_embedded_postgres_serves_and_stops_cleanly(ports_env: dict[str, str], tmp_path: Path) -> None:
    pg_dir = tmp_path / "pg"
    env = {**ports_env, "ZINGEST_DATABASE__EMBEDDED_DIR": str(pg_dir)}
    url = f"http://{env['ZINGEST_GATEWAY__LISTEN']}"
    up = start_up(env, tmp_path, "--sinks", "1")
    try:
        wait_until(lambda: up_ready(tmp_path / "up.log") or up.poll() is not None, timeout=120,
                   what="zingest up to serve")
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        row = {"id": 1, "user_id": 7, "vehicle_model_id": 12, "travel_type_id": 2,
               "from_date": "2013-01-01T09:00:00+05:30", "online_booking": True, "mobile_site_booking": False,
               "booking_created": "2013-01-01T08:00:00+05:30", "car_cancellation": False}
        req = urllib.request.Request(f"{url}/v1/ingest/rides", data=orjson.dumps(row),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
            job = orjson.loads(resp.read())

        def state() -> str | None:
            with urllib.request.urlopen(f"{url}{job['status_url']}", timeout=5) as resp:
                s = orjson.loads(resp.read())["state"]
            return s if s != "accepted" else None

        assert wait_until(state, timeout=30, what="the job to become final") == "committed"
        log_text = (tmp_path / "up.log").read_text()
        assert "PostgreSQL: " in log_text and f"zingest is up: {url}" in log_text
        # zingest replay finds the running server through the DSN kept beside its data folder.
        printed = log_text.split("PostgreSQL: ", 1)[1].split()[0]
        assert running_dsn(pg_dir) == printed
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = stop_process(up, timeout=60)
    assert code == 0, (tmp_path / "up.log").read_text()
    assert not (pg_dir / "postmaster.pid").exists(), "the embedded server was left running"
    assert running_dsn(pg_dir) is None
