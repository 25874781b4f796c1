"""`zingest send`: post a NDJSON or JSON-array file through a gateway and wait for every job.

``zingest send FILE --table T [--url URL | --config PATH] [--batch-rows N]
[--concurrency C] [--timeout S] [--key PREFIX] [--json] [--quiet]``

1. The file (``-`` is stdin) is split into batches of ``--batch-rows`` rows.
   NDJSON lines are forwarded byte for byte; the objects of a JSON array
   (first non-whitespace byte ``[``) are serialised with orjson.
2. ``--concurrency`` workers ``POST {url}/v1/ingest/{table}`` one batch each
   (``application/x-ndjson``). ``202`` names the job; ``503``/``429`` mean the
   gateway is full: wait ``Retry-After`` and send the same batch again, for at
   most ``--timeout`` seconds per batch; any other ``4xx`` rejects the batch.
   With ``--key PREFIX`` each batch carries ``Idempotency-Key: PREFIX:<first
   line>``, so the same file sent again with the same prefix and batch size is
   answered with the first jobs.
3. Once everything is posted, ``GET {url}/v1/jobs/{id}`` is polled for every
   job (at most ``--concurrency`` requests at a time, interval doubling from
   20 ms to 0.5 s) until each is committed or failed, for at most ``--timeout``,
   or until the gateway has refused connections for ``UNREACHABLE_GIVE_UP_S``.
4. One summary line goes to stdout (or a JSON object with ``--json``), then a
   line per failed job, rejected batch, or batch of unknown fate: accepted with
   no final status read (look its job id up later), or a POST cut off after
   the gateway may have taken it. Unknown is never counted as failed: the rows
   may well have landed, and sending them again could land them twice.

Exit codes: 0 every row committed, 1 some did not, 2 usage error or gateway
unreachable. Splitting and summarising are pure functions; the aiohttp client
loop only composes them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import enum
import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar
from urllib.parse import quote

import aiohttp
import orjson
import yarl
from tqdm import tqdm

from common.config import ConfigError, load_config
from common.wire import JobState, idempotency_key_ok

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_BATCH_ROWS = 1000
DEFAULT_CONCURRENCY = 4
# Seconds one batch may spend being retried while the gateway is full, and
# seconds the jobs may take to become final once everything is posted.
DEFAULT_TIMEOUT_S = 300.0
# Job status polling: first interval and cap, in seconds (doubling in between).
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5
# Longest and shortest single status request, in seconds: the last poll, at the
# deadline, still gets a fair chance to see a job that has just finished.
POLL_REQUEST_TIMEOUT_S = 10.0
POLL_REQUEST_MIN_S = 0.1
# Shortest wait before resending after 503/429, in seconds, so `Retry-After: 0`
# does not turn into a busy loop against a full gateway.
MIN_RETRY_WAIT_S = 0.05
# Wait, in seconds, when a 503/429 carries no usable Retry-After.
DEFAULT_RETRY_WAIT_S = 1.0
# Back-off while the gateway refuses connections (restarting): first and cap, in seconds.
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
# Seconds allowed for the start-up check that the gateway accepts connections.
CONNECT_CHECK_TIMEOUT_S = 5.0
# Waiting for statuses stops once every status request has failed to connect for this long.
UNREACHABLE_GIVE_UP_S = 15.0
# Error bodies are cut to this many characters in the report.
ERROR_TEXT_LIMIT = 500
NDJSON_TYPE = "application/x-ndjson"

T = TypeVar("T")
R = TypeVar("R")

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class InputError(ValueError):
    """The input is neither NDJSON nor a JSON array of objects."""


class GatewayUnreachable(ConnectionError):
    """Nothing accepts connections at the gateway's address."""


# ---------------------------------------------------------------- input (pure)


@dataclass(frozen=True, slots=True)
class Batch:
    """The rows of one POST, as NDJSON bytes (every line ends with a newline)."""

    # 1-based: the file line of the first row for NDJSON, its position in a JSON array.
    first_line: int
    rows: int
    body: bytes


@dataclass(frozen=True)
class Source:
    batches: Iterator[Batch]
    # Known before sending for a JSON array (it is parsed whole); None for NDJSON (streamed).
    rows: int | None


def ndjson_batches(lines: Iterable[bytes], batch_rows: int, first_line: int = 1) -> Iterator[Batch]:
    """Group non-blank ``lines`` (numbered from ``first_line``) into batches of at most ``batch_rows``."""
    chunk: list[bytes] = []
    chunk_start = first_line
    for lineno, line in enumerate(lines, first_line):
        if not line or line.isspace():
            continue
        if not chunk:
            chunk_start = lineno
        chunk.append(line if line.endswith(b"\n") else line + b"\n")
        if len(chunk) == batch_rows:
            yield Batch(chunk_start, len(chunk), b"".join(chunk))
            chunk = []
    if chunk:
        yield Batch(chunk_start, len(chunk), b"".join(chunk))


def json_array_batches(items: Sequence[Any], batch_rows: int) -> Iterator[Batch]:
    """Serialise the objects of a parsed JSON array into NDJSON batches of at most ``batch_rows``."""
    for start in range(0, len(items), batch_rows):
        chunk = items[start : start + batch_rows]
        body = b"".join(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE) for item in chunk)
        yield Batch(start + 1, len(chunk), body)


def open_source(stream: BinaryIO, batch_rows: int) -> Source:
    """Detect the format from the first non-whitespace byte and return the batches to send.

    A JSON array is parsed here, so a malformed one raises :class:`InputError`
    before anything is sent; NDJSON is streamed and checked by the gateway.
    """
    for lineno, line in enumerate(stream, 1):
        if not line.isspace():
            break
    else:
        return Source(iter(()), 0)
    if not line.lstrip().startswith(b"["):
        return Source(ndjson_batches(itertools.chain([line], stream), batch_rows, lineno), None)
    try:
        items = orjson.loads(line + stream.read())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not a valid JSON array: {exc}") from exc
    for position, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise InputError(f"element {position} of the JSON array is not an object: {item!r:.80}")
    return Source(json_array_batches(items, batch_rows), len(items))


def count_ndjson_rows(stream: BinaryIO) -> int:
    """Non-blank lines of an NDJSON stream (the progress bar's total)."""
    return sum(1 for line in stream if not line.isspace())


# ------------------------------------------------------------- results (pure)


class Outcome(str, enum.Enum):
    ACCEPTED = "accepted"  # the gateway took the batch as a job; not final yet
    COMMITTED = "committed"
    PARTIAL = "partial"  # some rows committed, the others refused (kept in zingest.dead_letters)
    FAILED = "failed"  # the job failed, or the batch was never accepted in time
    REJECTED = "rejected"  # the gateway refused the batch's content (4xx)
    UNKNOWN = "unknown"  # taken (or maybe taken) by the gateway, but no final status was read


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one batch."""

    first_line: int
    rows: int
    outcome: Outcome
    job_id: str | None = None
    # Why it failed or was rejected; while ACCEPTED, the last status the gateway gave.
    error: str | None = None
    # Rows of a PARTIAL job that did land.
    rows_committed: int = 0
    # The gateway answered with the job an earlier send made under the same Idempotency-Key (--key).
    replayed: bool = False

    @property
    def landed(self) -> int:
        if self.outcome is Outcome.COMMITTED:
            return self.rows
        return self.rows_committed if self.outcome is Outcome.PARTIAL else 0


@dataclass(frozen=True)
class Summary:
    rows: int
    jobs: int
    committed_rows: int
    failed: tuple[Result, ...]
    rejected: tuple[Result, ...]
    seconds: float
    unknown: tuple[Result, ...] = ()
    # Committed rows whose batch the gateway answered with an earlier send's job (same --key):
    # they landed then, not now, and do not count toward rows/s.
    replayed_rows: int = 0

    @property
    def rows_per_s(self) -> float:
        return (self.committed_rows - self.replayed_rows) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.committed_rows == self.rows and not (self.failed or self.rejected or self.unknown)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "jobs": self.jobs,
            "committed_rows": self.committed_rows,
            "failed_jobs": [
                {"job_id": r.job_id, "first_line": r.first_line, "rows": r.rows, "error": r.error} for r in self.failed
            ],
            "rejected_batches": [{"first_line": r.first_line, "rows": r.rows, "error": r.error} for r in self.rejected],
            "unknown_jobs": [
                {"job_id": r.job_id, "first_line": r.first_line, "rows": r.rows, "error": r.error} for r in self.unknown
            ],
            "replayed_rows": self.replayed_rows,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
        }

    def lines(self) -> list[str]:
        """The text report: the summary line, then one line per failed job or rejected batch."""
        failed_rows = sum(r.rows - r.landed for r in self.failed)
        rejected_rows = sum(r.rows for r in self.rejected)
        unknown = f", {sum(r.rows for r in self.unknown)} unknown" if self.unknown else ""
        out = [
            # "failed": rows of accepted jobs that did not land (PostgreSQL refused them: dead letters);
            # "refused": rows of batches the gateway answered with a 4xx (no job was made).
            f"sent {self.rows} rows in {self.jobs} jobs: {self.committed_rows} committed, {failed_rows} failed,"
            f" {rejected_rows} refused by the gateway{unknown} in {self.seconds:.2f} s ({self.rows_per_s:.0f} rows/s)"
        ]
        if self.replayed_rows:
            out.append(f"{self.replayed_rows} of the committed rows were landed by an earlier send under the same"
                       " --key (the gateway answered with its jobs)")
        for r in self.failed:
            what = f"job {r.job_id}" if r.job_id else "batch"
            if r.outcome is Outcome.PARTIAL:
                out.append(f"partly failed {what} ({r.rows - r.landed} of {r.rows} rows from line {r.first_line}"
                           f" refused): {r.error}")
            else:
                out.append(f"failed {what} ({r.rows} rows from line {r.first_line}): {r.error}")
        for r in self.rejected:
            out.append(f"refused batch ({r.rows} rows from line {r.first_line}): {r.error}")
        if self.unknown:
            out.append("unknown: these may have landed; do not send them again before looking them up"
                       " (GET /v1/jobs/<job id>)")
        for r in self.unknown:
            what = f"job {r.job_id}" if r.job_id else "batch (no job id)"
            out.append(f"unknown {what} ({r.rows} rows from line {r.first_line}): {r.error}")
        return out


def summarise(results: Iterable[Result], seconds: float) -> Summary:
    ordered = sorted(results, key=lambda r: r.first_line)
    return Summary(
        rows=sum(r.rows for r in ordered),
        jobs=sum(1 for r in ordered if r.job_id is not None),
        committed_rows=sum(r.landed for r in ordered),
        failed=tuple(r for r in ordered if r.outcome in (Outcome.FAILED, Outcome.PARTIAL)),
        rejected=tuple(r for r in ordered if r.outcome is Outcome.REJECTED),
        seconds=seconds,
        unknown=tuple(r for r in ordered if r.outcome in (Outcome.UNKNOWN, Outcome.ACCEPTED)),
        replayed_rows=sum(r.landed for r in ordered if r.replayed),
    )


def error_text(status: int, body: bytes) -> str:
    """A short description of an error answer: its JSON ``error`` field if it has one, else its text."""
    text = body.decode("utf-8", "replace").strip()
    with contextlib.suppress(orjson.JSONDecodeError):
        doc = orjson.loads(body)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            text = doc["error"]
    text = text[:ERROR_TEXT_LIMIT]
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def retry_after_s(header: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds form; anything else gets the default)."""
    try:
        return max(float(header), MIN_RETRY_WAIT_S) if header is not None else DEFAULT_RETRY_WAIT_S
    except ValueError:
        return DEFAULT_RETRY_WAIT_S


def read_job_status(status: int, body: bytes) -> tuple[JobState | None, str, int]:
    """The state in a ``GET /v1/jobs/{id}`` answer and a note for the report.

    The state is None when the answer names none we know (404 ``not_found``,
    errors): the caller keeps polling until its deadline. The int is the job's rows_committed.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, error_text(status, body), 0
    if not isinstance(doc, dict):
        return None, error_text(status, body), 0
    if status == 404:
        return None, "unknown job id (404 not_found)", 0
    if status != 200:
        return None, error_text(status, body), 0
    try:
        state = JobState(doc.get("state"))
    except ValueError:
        return None, f"unexpected state {doc.get('state')!r}", 0
    committed = doc.get("rows_committed")
    return state, str(doc.get("error") or state.value), committed if isinstance(committed, int) else 0


# ----------------------------------------------------------- HTTP client loop


@dataclass(frozen=True)
class Options:
    url: str
    table: str
    concurrency: int = DEFAULT_CONCURRENCY
    timeout_s: float = DEFAULT_TIMEOUT_S
    # With a prefix, each batch goes under Idempotency-Key "<prefix>:<its first line>": sending the same
    # file again with the same prefix and --batch-rows returns the first jobs instead of landing rows twice.
    key_prefix: str | None = None

    def batch_key(self, batch: Batch) -> str | None:
        return None if self.key_prefix is None else f"{self.key_prefix}:{batch.first_line}"


async def bounded_map(func: Callable[[T], Awaitable[R]], items: Iterable[T], concurrency: int) -> list[R]:
    """Await ``func`` on each item, at most ``concurrency`` at a time; results in completion order.

    ``items`` is pulled lazily, so a streamed file is read only as fast as it is sent.
    """
    results: list[R] = []
    queue = iter(items)

    async def worker() -> None:
        for item in queue:  # shared by the workers; next() never awaits, so no two take the same item
            results.append(await func(item))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def check_reachable(url: str) -> None:
    """Raise :class:`GatewayUnreachable` unless something accepts TCP connections at ``url``."""
    parsed = yarl.URL(url)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parsed.host, parsed.port), CONNECT_CHECK_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {reason}") from exc
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def post_batch(session: aiohttp.ClientSession, ingest_url: str, batch: Batch, timeout_s: float,
                     idempotency_key: str | None = None) -> Result:
    """POST one batch until the gateway takes it, rejects it, or ``timeout_s`` runs out."""
    headers = {"Content-Type": NDJSON_TYPE}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key

    def result(outcome: Outcome, job_id: str | None = None, error: str | None = None) -> Result:
        return Result(batch.first_line, batch.rows, outcome, job_id, error)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    reconnect_wait = RECONNECT_FIRST_S
    last = "no answer"
    while (remaining := deadline - loop.time()) > 0:
        try:
            async with session.post(
                ingest_url,
                data=batch.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=remaining),
            ) as resp:
                status, body, retry_after = resp.status, await resp.read(), resp.headers.get("Retry-After")
                replayed = resp.headers.get("Idempotent-Replayed")
        except aiohttp.ClientConnectorError as exc:
            # The request never reached the gateway (it may be restarting): safe to send again.
            last = f"cannot connect: {exc.os_error.strerror or exc}"
            await asyncio.sleep(min(reconnect_wait, remaining))
            reconnect_wait = min(reconnect_wait * 2, RECONNECT_MAX_S)
            continue
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The gateway may have taken the rows: sending again could land them twice.
            return result(Outcome.UNKNOWN, error=f"the POST was cut off, the gateway may have taken it: {exc!r}")
        if status == 202:
            try:
                return dataclasses.replace(result(Outcome.ACCEPTED, job_id=str(orjson.loads(body)["job_id"])),
                                           replayed=replayed == "true")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return result(Outcome.FAILED, error=f"202 without a job id: {body!r:.200}")
        if status in (429, 503):
            last = error_text(status, body)
            await asyncio.sleep(min(retry_after_s(retry_after), max(deadline - loop.time(), 0.0)))
            continue
        if 400 <= status < 500:
            return result(Outcome.REJECTED, error=error_text(status, body))
        # A 5xx other than 503: whether the rows were taken is unknown, so do not resend.
        return result(Outcome.FAILED, error=error_text(status, body))
    return result(Outcome.FAILED, error=f"not accepted within {timeout_s:g} s ({last})")


async def poll_job(session: aiohttp.ClientSession, jobs_url: str, result: Result,
                   deadline: float) -> tuple[Result, bool]:
    """Ask once for an accepted job's status: the result (final, or ACCEPTED with a note), and
    whether the gateway answered at all."""
    assert result.job_id is not None
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        async with session.get(
            f"{jobs_url}/{quote(result.job_id, safe='')}",
            timeout=aiohttp.ClientTimeout(total=max(min(remaining, POLL_REQUEST_TIMEOUT_S), POLL_REQUEST_MIN_S)),
        ) as resp:
            status, body = resp.status, await resp.read()
    except aiohttp.ClientConnectorError as exc:
        return dataclasses.replace(result, error=f"the gateway is unreachable: {exc.os_error.strerror or exc}"), False
    except (aiohttp.ClientError, TimeoutError) as exc:
        return dataclasses.replace(result, error=f"status request failed: {exc!r}"), True
    state, note, committed = read_job_status(status, body)
    if state is JobState.COMMITTED:
        return dataclasses.replace(result, outcome=Outcome.COMMITTED, error=None), True
    if state is JobState.PARTIAL:
        return dataclasses.replace(result, outcome=Outcome.PARTIAL, error=note, rows_committed=committed), True
    if state is JobState.FAILED:
        return dataclasses.replace(result, outcome=Outcome.FAILED, error=note), True
    return dataclasses.replace(result, error=f"last status: {note}"), True


async def wait_for_jobs(
    session: aiohttp.ClientSession, jobs_url: str, results: list[Result], options: Options
) -> list[Result]:
    """Poll every ACCEPTED result until final. Those still open after ``options.timeout_s``, or once the
    gateway has been unreachable for UNREACHABLE_GIVE_UP_S, become UNKNOWN (never FAILED: they may land)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.timeout_s
    done = [r for r in results if r.outcome is not Outcome.ACCEPTED]
    pending = [r for r in results if r.outcome is Outcome.ACCEPTED]
    interval = POLL_FIRST_S
    last_answer = loop.time()
    late = f"no final status within {options.timeout_s:g} s"
    while pending:
        polled = await bounded_map(lambda r: poll_job(session, jobs_url, r, deadline), pending, options.concurrency)
        done += [r for r, _ in polled if r.outcome is not Outcome.ACCEPTED]
        pending = [r for r, _ in polled if r.outcome is Outcome.ACCEPTED]
        if any(answered for _, answered in polled):
            last_answer = loop.time()
        elif loop.time() - last_answer >= UNREACHABLE_GIVE_UP_S:
            late = f"the gateway refused connections for {UNREACHABLE_GIVE_UP_S:g} s"
            break
        remaining = deadline - loop.time()
        if not pending or remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 2, POLL_MAX_S)
    return done + [dataclasses.replace(r, outcome=Outcome.UNKNOWN, error=f"{late} ({r.error})") for r in pending]


async def send(source: Source, options: Options, progress: tqdm[Any]) -> tuple[list[Result], float]:
    """Post every batch, wait for every job; return the results and the seconds from first POST to last final."""
    await check_reachable(options.url)
    ingest_url = f"{options.url}/v1/ingest/{quote(options.table, safe='')}"
    jobs_url = f"{options.url}/v1/jobs"
    connector = aiohttp.TCPConnector(limit=options.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()

        async def post(batch: Batch) -> Result:
            result = await post_batch(session, ingest_url, batch, options.timeout_s, options.batch_key(batch))
            progress.update(batch.rows)
            return result

        posted = await bounded_map(post, source.batches, options.concurrency)
        progress.close()
        results = await wait_for_jobs(session, jobs_url, posted, options)
        return results, time.perf_counter() - started


# ------------------------------------------------------------------------ CLI


def gateway_url(url: str | None, config_path: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``--url`` if given, else ``http://`` + ``gateway.listen`` (from ``--config`` and ``environ``,
    the process's environment by default)."""
    if url is not None:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"--url: expected http://host:port, got {url!r}")
        return url.rstrip("/")
    # gateway.listen of --config, or of the defaults; ZINGEST_GATEWAY__LISTEN overrides either.
    host, _, port = load_config(config_path, environ).gateway.listen.rpartition(":")
    # A gateway listening on every interface is reached through the loopback one.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zingest send", description="Post a NDJSON or JSON-array file through a gateway and wait for every job."
    )
    parser.add_argument("file", metavar="FILE", help="NDJSON or a JSON array of objects; - reads stdin")
    parser.add_argument("--table", required=True, help="destination table")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--url", help=f"gateway base URL (default: gateway.listen of --config or ZINGEST_GATEWAY__LISTEN, else {DEFAULT_URL})")
    where.add_argument("--config", metavar="PATH", help="take the gateway address from this config.toml")
    parser.add_argument(
        "--batch-rows", type=positive_int, default=DEFAULT_BATCH_ROWS, metavar="N",
        help=f"rows per POST (default {DEFAULT_BATCH_ROWS})",
    )
    parser.add_argument(
        "--concurrency", type=positive_int, default=DEFAULT_CONCURRENCY, metavar="C",
        help=f"POSTs (and later status requests) in flight (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=DEFAULT_TIMEOUT_S, metavar="S",
        help=f"seconds a batch may wait on a full gateway, and the jobs to finish (default {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--key", type=key_prefix, metavar="PREFIX",
        help="send batch k under Idempotency-Key PREFIX:<first line of k>, so that sending the file again with the"
             " same PREFIX and --batch-rows (after a crash, or jobs of unknown fate) lands nothing twice",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# Leaves room in an Idempotency-Key (MAX_IDEMPOTENCY_KEY_LEN) for ":" and a line number.
MAX_KEY_PREFIX_LEN = 200


def key_prefix(text: str) -> str:
    if not idempotency_key_ok(text, MAX_KEY_PREFIX_LEN):
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_KEY_PREFIX_LEN} printable ASCII characters")
    return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def fail(message: str) -> int:
        print(f"zingest send: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        options = Options(gateway_url(args.url, args.config), args.table, args.concurrency, args.timeout, args.key)
    except ConfigError as exc:
        return fail(str(exc))
    with contextlib.ExitStack() as stack:
        if args.file == "-":
            stream: BinaryIO = sys.stdin.buffer
        else:
            try:
                stream = stack.enter_context(open(args.file, "rb"))
            except OSError as exc:
                return fail(f"cannot read {args.file}: {exc.strerror or exc}")
        try:
            source = open_source(stream, args.batch_rows)
        except InputError as exc:
            return fail(f"{args.file}: {exc}")
        show_progress = not args.quiet and sys.stderr.isatty()
        total = source.rows
        if total is None and show_progress and args.file != "-" and os.path.isfile(args.file):
            with open(args.file, "rb") as again:
                total = count_ndjson_rows(again)
        progress = stack.enter_context(
            tqdm(total=total, unit=" rows", unit_scale=True, file=sys.stderr, disable=not show_progress)
        )
        try:
            results, seconds = asyncio.run(send(source, options, progress))
        except GatewayUnreachable as exc:
            return fail(str(exc))
        except KeyboardInterrupt:
            print("zingest send: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    summary = summarise(results, seconds)
    if args.json:
        print(orjson.dumps(summary.as_dict()).decode())
    else:
        print("\n".join(summary.lines()))
    return EXIT_OK if summary.ok else EXIT_INCOMPLETE
