"""Unit tests for `zingest send`: file splitting, summaries, and the client against a fake gateway.

The fake gateway is a real aiohttp server on a random port, run on its own
event loop in a thread so that ``send.main`` can run its own ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from common.wire import JobState
from zingest import send
from zingest.send import (
    Batch,
    InputError,
    Outcome,
    Result,
    gateway_url,
    ndjson_batches,
    open_source,
    read_job_status,
    retry_after_s,
    summarise,
)

# ------------------------------------------------------------------ splitting


def test_ndjson_skips_blank_lines_and_numbers_batches_by_file_line() -> None:
    data = b'{"id":1}\n\n{"id":2}\n   \n{"id":3}\r\n{"id":4}\n\n{"id":5}'
    batches = list(open_source(io.BytesIO(data), 2).batches)
    assert batches == [
        Batch(1, 2, b'{"id":1}\n{"id":2}\n'),
        Batch(5, 2, b'{"id":3}\r\n{"id":4}\n'),
        Batch(8, 1, b'{"id":5}\n'),
    ]


def test_ndjson_leading_blank_lines_keep_line_numbers() -> None:
    source = open_source(io.BytesIO(b'\n\n  {"id": 1}\n{"id": 2}\n'), 10)
    assert source.rows is None
    assert list(source.batches) == [Batch(3, 2, b'  {"id": 1}\n{"id": 2}\n')]


def test_ndjson_batches_forward_the_original_bytes() -> None:
    lines = [b'{"b": 1.50, "a": "\\u00e9"}\n', b'{"a":null}\n']
    assert b"".join(b.body for b in ndjson_batches(lines, 1)) == b"".join(lines)


def test_json_array_is_detected_and_serialised_per_object() -> None:
    data = b' \n [\n {"id": 1, "x": "a"},\n {"id": 2},\n {"id": 3}\n]\n'
    source = open_source(io.BytesIO(data), 2)
    assert source.rows == 3
    assert list(source.batches) == [Batch(1, 2, b'{"id":1,"x":"a"}\n{"id":2}\n'), Batch(3, 1, b'{"id":3}\n')]


def test_empty_input_has_no_batches() -> None:
    for data in (b"", b"\n \n", b"[]"):
        assert list(open_source(io.BytesIO(data), 5).batches) == []


@pytest.mark.parametrize("data", [b'[{"id": 1}, ', b'[{"id": 1}, 2]', b"[[1]]"])
def test_bad_json_array_is_an_input_error(data: bytes) -> None:
    with pytest.raises(InputError):
        open_source(io.BytesIO(data), 5)


def test_count_ndjson_rows() -> None:
    assert send.count_ndjson_rows(io.BytesIO(b'{"a":1}\n\n{"a":2}\n \n{"a":3}')) == 3


# ------------------------------------------------------------ pure decisions


def test_retry_after() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s("0") == send.MIN_RETRY_WAIT_S
    assert retry_after_s(None) == send.DEFAULT_RETRY_WAIT_S
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == send.DEFAULT_RETRY_WAIT_S


def test_read_job_status() -> None:
    committed = orjson.dumps({"job_id": "j", "state": "committed", "rows": 2, "error": None})
    failed = orjson.dumps({"job_id": "j", "state": "failed", "rows": 2, "error": "duplicate key"})
    assert read_job_status(200, committed)[:2] == (JobState.COMMITTED, "committed")
    assert read_job_status(200, failed)[:2] == (JobState.FAILED, "duplicate key")
    partial = orjson.dumps({"state": "partial", "rows_committed": 7, "error": "1 of 8 rows refused"})
    assert read_job_status(200, partial) == (JobState.PARTIAL, "1 of 8 rows refused", 7)
    assert read_job_status(200, orjson.dumps({"state": "accepted"}))[0] is JobState.ACCEPTED
    assert read_job_status(404, orjson.dumps({"job_id": "j", "state": "not_found"})) == (
        None,
        "unknown job id (404 not_found)",
        0,
    )
    assert read_job_status(500, b"oops") == (None, "HTTP 500: oops", 0)


def test_summary_counts_rows_and_lists_problems() -> None:
    results = [
        Result(7, 3, Outcome.REJECTED, error="HTTP 400: line 1: not an object"),
        Result(1, 3, Outcome.COMMITTED, job_id="a"),
        Result(4, 3, Outcome.FAILED, job_id="b", error="duplicate key"),
        Result(10, 1, Outcome.FAILED, error="not accepted within 1 s"),
    ]
    summary = summarise(results, 2.0)
    assert (summary.rows, summary.jobs, summary.committed_rows) == (10, 2, 3)
    assert summary.rows_per_s == 1.5
    assert not summary.ok
    assert summary.lines() == [
        "sent 10 rows in 2 jobs: 3 committed, 4 failed, 3 refused by the gateway in 2.00 s (2 rows/s)",
        "failed job b (3 rows from line 4): duplicate key",
        "failed batch (1 rows from line 10): not accepted within 1 s",
        "refused batch (3 rows from line 7): HTTP 400: line 1: not an object",
    ]
    doc = summary.as_dict()
    assert [f["job_id"] for f in doc["failed_jobs"]] == ["b", None]
    assert doc["rejected_batches"] == [{"first_line": 7, "rows": 3, "error": "HTTP 400: line 1: not an object"}]


def test_summary_of_nothing_is_ok() -> None:
    summary = summarise([], 0.0)
    assert summary.ok and summary.rows_per_s == 0.0


def test_gateway_url_precedence(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[gateway]\nlisten = "0.0.0.0:9123"\n')
    assert gateway_url(None, None, {}) == send.DEFAULT_URL
    assert gateway_url(None, str(config), {}) == "http://127.0.0.1:9123"
    assert gateway_url("http://example.test:81/", None) == "http://example.test:81"


def test_gateway_url_follows_the_environment_like_every_role() -> None:
    environ = {"ZINGEST_GATEWAY__LISTEN": "127.0.0.1:18080"}
    assert gateway_url(None, None, environ) == "http://127.0.0.1:18080"
    assert gateway_url("http://127.0.0.1:81", None, environ) == "http://127.0.0.1:81"


# ------------------------------------------------------- against a fake gateway


class FakeGateway:
    """Answers like the real gateway; a body containing ``"bad"`` is rejected, ``"fail"`` makes the job fail.

    The first ``busy`` POSTs (every one if ``busy`` is None) get 503 with ``retry_after``.
    A job's first status answer is ``accepted``, later ones final; ``forget_jobs`` answers 404 instead.
    ``vanish``: the gateway stops (closes its port and connections) after its first status answer.
    """

    def __init__(self, busy: int | None = 0, retry_after: str = "0", forget_jobs: bool = False,
                 vanish: bool = False) -> None:
        self.busy, self.retry_after, self.forget_jobs, self.vanish = busy, retry_after, forget_jobs, vanish
        self.runner: web.AppRunner | None = None
        self.posts: list[tuple[str, str, bytes]] = []  # (table, content type, body) of every POST
        self.busy_answers = 0
        self.jobs: dict[str, tuple[int, bool]] = {}  # job id -> (rows, fails)
        self.polls: Counter[str] = Counter()

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append((request.match_info["table"], request.content_type, body))
        if self.busy is None or self.busy_answers < self.busy:
            self.busy_answers += 1
            return web.json_response({"error": "full"}, status=503, headers={"Retry-After": self.retry_after})
        if b'"bad"' in body:
            return web.json_response({"error": "line 2: not an object"}, status=400)
        job_id = uuid.uuid4().hex
        rows = len([line for line in body.splitlines() if line.strip()])
        self.jobs[job_id] = (rows, b'"fail"' in body)
        return web.json_response({"job_id": job_id, "rows": rows, "status_url": f"/v1/jobs/{job_id}"}, status=202)

    async def job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        self.polls[job_id] += 1
        if self.vanish and self.runner is not None:
            asyncio.get_running_loop().create_task(self.runner.cleanup())
            self.runner = None
        if job_id not in self.jobs or self.forget_jobs:
            return web.json_response({"job_id": job_id, "state": "not_found"}, status=404)
        rows, fails = self.jobs[job_id]
        state, error = "accepted", None
        if self.polls[job_id] > 1:
            state, error = ("failed", "duplicate key value") if fails else ("committed", None)
        committed_at = 2.0 if state == "committed" else None
        return web.json_response(
            {
                "job_id": job_id,
                "table": "rides",
                "state": state,
                "rows": rows,
                "accepted_at": 1.0,
                "committed_at": committed_at,
                "error": error,
            }
        )


@contextlib.contextmanager
def serve(gateway: FakeGateway) -> Iterator[str]:
    """Run ``gateway`` on 127.0.0.1, a random port, in a thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-gateway", daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/v1/ingest/{table}", gateway.ingest)
        app.router.add_get("/v1/jobs/{job_id}", gateway.job)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, runner.addresses[0][1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    gateway.runner = runner
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if gateway.runner is not None:  # else it stopped itself
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def ndjson_file(tmp_path: Path, rows: list[dict], blank_every: int = 0) -> tuple[Path, list[bytes]]:
    lines = [orjson.dumps(row) + b"\n" for row in rows]
    out = []
    for i, line in enumerate(lines, 1):
        out.append(line)
        if blank_every and i % blank_every == 0:
            out.append(b"\n")
    path = tmp_path / "rows.ndjson"
    path.write_bytes(b"".join(out))
    return path, lines


def test_send_retries_a_503_and_waits_for_every_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, lines = ndjson_file(tmp_path, [{"id": i, "note": "ok"} for i in range(1, 11)], blank_every=4)
    gateway = FakeGateway(busy=1)
    with serve(gateway) as url:
        code = send.main([str(path), "--table", "rides", "--url", url, "--batch-rows", "3", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("sent 10 rows in 4 jobs: 10 committed, 0 failed, 0 refused by the gateway in ")
    assert len(out) == 1
    assert gateway.busy_answers == 1
    assert len(gateway.posts) == 5  # four batches, one of them sent twice
    assert {(table, ctype) for table, ctype, _ in gateway.posts} == {("rides", "application/x-ndjson")}
    forwarded = [line for _, _, body in gateway.posts[1:] for line in body.splitlines(keepends=True)]
    assert sorted(forwarded) == sorted(lines)  # the original bytes, each row once
    assert all(count >= 2 for count in gateway.polls.values())  # polled until final, not just once


def test_send_reports_failed_jobs_and_rejected_batches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": i, "note": "ok"} for i in range(1, 11)]
    rows[4]["note"] = "fail"  # line 5, in the batch of lines 4-6
    rows[7]["note"] = "bad"  # line 8, in the batch of lines 7-9
    path, _ = ndjson_file(tmp_path, rows)
    with serve(FakeGateway()) as url:
        code = send.main([str(path), "--table", "rides", "--url", url, "--batch-rows", "3", "--json", "--quiet"])
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert (doc["rows"], doc["jobs"], doc["committed_rows"]) == (10, 3, 4)
    assert [(f["first_line"], f["error"]) for f in doc["failed_jobs"]] == [(4, "duplicate key value")]
    assert doc["failed_jobs"][0]["job_id"]
    assert doc["rejected_batches"] == [{"first_line": 7, "rows": 3, "error": "HTTP 400: line 2: not an object"}]
    assert doc["seconds"] > 0 and doc["rows_per_s"] > 0


def test_send_json_array_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": i, "name": f"r{i}"} for i in range(1, 6)]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(orjson.dumps(rows, option=orjson.OPT_INDENT_2))))
    gateway = FakeGateway()
    with serve(gateway) as url:
        code = send.main(["-", "--table", "people", "--url", url, "--batch-rows", "2", "--quiet"])
    assert code == 0
    assert capsys.readouterr().out.startswith("sent 5 rows in 3 jobs: 5 committed, 0 failed, 0 refused by the gateway")
    sent = [orjson.loads(line) for _, _, body in gateway.posts for line in body.splitlines()]
    assert sorted(sent, key=lambda r: r["id"]) == rows
    assert {table for table, _, _ in gateway.posts} == {"people"}


def test_send_gives_up_on_a_gateway_that_stays_full(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = ndjson_file(tmp_path, [{"id": 1}, {"id": 2}])
    gateway = FakeGateway(busy=None, retry_after="30")
    with serve(gateway) as url:
        code = send.main([str(path), "--table", "rides", "--url", url, "--timeout", "0.3", "--json", "--quiet"])
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["jobs"] == 0 and doc["committed_rows"] == 0
    [failed] = doc["failed_jobs"]
    assert failed["job_id"] is None and failed["rows"] == 2
    assert failed["error"].startswith("not accepted within 0.3 s (HTTP 503: full)")
    assert len(gateway.posts) == 1  # Retry-After was honoured (capped by the timeout), not ignored


def test_a_job_the_gateway_does_not_know_is_unknown_not_failed(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = ndjson_file(tmp_path, [{"id": 1}])
    gateway = FakeGateway(forget_jobs=True)
    with serve(gateway) as url:
        code = send.main([str(path), "--table", "rides", "--url", url, "--timeout", "0.3", "--quiet"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("sent 1 rows in 1 jobs: 0 committed, 0 failed, 0 refused by the gateway, 1 unknown")
    assert out[1].startswith("unknown: these may have landed")
    assert "no final status within 0.3 s (last status: unknown job id (404 not_found))" in out[2]
    assert sum(gateway.polls.values()) >= 3  # kept polling until the deadline


def test_a_gateway_that_goes_away_leaves_jobs_unknown_without_waiting_out_the_timeout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(send, "UNREACHABLE_GIVE_UP_S", 0.5)
    path, _ = ndjson_file(tmp_path, [{"id": i} for i in range(1, 5)])
    gateway = FakeGateway(vanish=True)
    with serve(gateway) as url:
        code = send.main([str(path), "--table", "rides", "--url", url, "--batch-rows", "2", "--timeout", "600",
                          "--quiet", "--json"])
    doc = orjson.loads(capsys.readouterr().out)
    assert code == 1
    assert doc["failed_jobs"] == [] and doc["committed_rows"] == 0
    assert len(doc["unknown_jobs"]) == 2 and {j["job_id"] for j in doc["unknown_jobs"]} == set(gateway.jobs)
    for job in doc["unknown_jobs"]:
        assert job["error"].startswith("the gateway refused connections for 0.5 s (the gateway is unreachable"), job


def test_unreachable_gateway_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, and nobody listens on now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path, _ = ndjson_file(tmp_path, [{"id": 1}])
    code = send.main([str(path), "--table", "rides", "--url", f"http://127.0.0.1:{port}", "--quiet"])
    captured = capsys.readouterr()
    assert code == 2
    assert f"cannot reach the gateway at http://127.0.0.1:{port}" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert send.main([str(tmp_path / "missing.ndjson"), "--table", "rides", "--quiet"]) == 2
    assert "cannot read" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'[{"id": 1},')
    assert send.main([str(broken), "--table", "rides", "--quiet"]) == 2
    assert "not a valid JSON array" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        send.main([str(broken), "--table", "rides", "--batch-rows", "0"])
    assert exc.value.code == 2
