"""Schema-driven fuzzing of the gateway's HTTP API (schemathesis), against one live gateway and one live sink.

The schema is the one the gateway serves at ``GET /openapi.json`` (gateway/openapi.py).
For every operation in it, schemathesis generates cases that fit the schema and cases that
do not (``GenerationMode.POSITIVE`` and ``NEGATIVE``), and every answer must:

* not be a 5xx, except a 503 that carries ``Retry-After``; those are counted, and as the sink
  stays connected there must be none (``test_no_refusals_and_both_processes_still_run``);
* conform to the schema: a documented status code and content type, a JSON body that matches
  the response schema, the documented response headers;
* come within ``CLIENT_TIMEOUT_S`` (the client's timeout: a hung request fails the test).

Cases stop at 404 or "unknown column" unless they name a real table and its columns, so most
ingest cases are steered: the table is ``notes`` (text, jsonb and numeric columns, so generated
JSON objects have somewhere to go as ``doc`` values) or the demo ``rides`` table, with rows drawn
for that table (valid ones and near misses) in whichever media type schemathesis chose, and a
gzip or deflate Content-Encoding gets a body compressed that way. NDJSON, msgpack and CSV are
only ``format: binary`` in the schema: strategies registered with schemathesis make them real
documents, sometimes cut short, with a byte changed, or random bytes. Job look-ups use ids
the gateway issued in this run besides generated ones.

Hypothesis runs derandomized, so CI sends the same cases every time, and without shrinking,
so a failing case is reported as sent, with a curl command that repeats it. Hostile bodies
schemathesis does not make go through the same harness in ``test_hostile_body``. At the end
both processes must still run, and their logs must hold no traceback.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.media_types import MEDIA_TYPE_STRATEGIES
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.asgi import ASGI_TRANSPORT
from schemathesis.transport.requests import REQUESTS_TRANSPORT
from schemathesis.transport.wsgi import WSGI_TRANSPORT

from tests.cluster import Cluster
from tests.conftest import ROOT, endpoints_env, scratch_database, wait_until

MAX_BODY = 65536
MAX_ROWS = 200
WAIT_TIMEOUT_S = 1
CLIENT_TIMEOUT_S = 10.0
# Cases per operation; an operation with nothing to vary (healthz, metrics) stops after the few there are.
EXAMPLES = {"ingest": 60, "job": 40, "healthz": 5, "metrics": 5}
# Outcomes each operation's cases must have reached (one status of each set), for the run to have tested
# anything (?wait=true answers are covered case by case in test_http_api.py).
REACHES = {"ingest": [{202}, {400}, {404}], "job": [{200}, {404}], "healthz": [{200}], "metrics": [{200}]}
OPERATIONS = {"ingest": ("POST", "/v1/ingest/{table}"), "job": ("GET", "/v1/jobs/{job_id}"),
              "healthz": ("GET", "/healthz"), "metrics": ("GET", "/metrics")}

# A numeric column makes the gateway read this table's JSON numbers exactly (another parser than rides gets).
NOTES_DDL = "CREATE TABLE notes (id bigserial PRIMARY KEY, note text, doc jsonb, amount numeric)"

JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
MSGPACK_ALIAS = "application/x-msgpack"
CSV = "text/csv"

# What the run saw, for the checks at the end: the 503s, and the ids of the jobs accepted.
REFUSALS: list[str] = []
JOB_IDS: list[str] = []


# --- rows and bodies ------------------------------------------------------------------------------------

_text = st.text(max_size=24)
_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False,
                                                                               allow_infinity=False) | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)
_timestamps = st.datetimes().map(lambda d: d.isoformat()) | st.sampled_from(
    ["2013-01-01T09:00:00+05:30", "2013-01-01 09:00", "2013-01-01T09:00:00Z", "infinity", "-infinity"])

# Each column of rides, with values of its type; ride_rows puts in other values and leaves columns out.
RIDE_COLUMNS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers(1, 2**62), "user_id": st.integers(-(2**63), 2**63 - 1),
    "vehicle_model_id": st.integers(-(2**31), 2**31 - 1), "package_id": st.integers(0, 10) | st.none(),
    "travel_type_id": st.integers(-(2**15), 2**15 - 1), "from_area_id": st.integers(0, 2000) | st.none(),
    "to_area_id": st.integers(0, 2000) | st.none(), "from_city_id": st.integers(0, 40) | st.none(),
    "to_city_id": st.integers(0, 40) | st.none(), "from_date": _timestamps, "to_date": _timestamps | st.none(),
    "online_booking": st.booleans(), "mobile_site_booking": st.booleans(), "booking_created": _timestamps,
    "from_lat": st.floats(-90, 90) | st.none(), "from_long": st.floats(-180, 180) | st.none(),
    "to_lat": st.floats() | st.sampled_from(["NaN", "Infinity"]) | st.none(), "to_long": st.floats() | st.none(),
    "car_cancellation": st.booleans(),
}


def _one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws. Hypothesis favours the ends of a range, so True sits in its middle."""
    return st.integers(0, n - 1).map(lambda i: i == n // 2)


_odd = _one_in(30)


@st.composite
def ride_rows(draw: st.DrawFn) -> dict[str, Any]:
    row = {}
    for column, values in RIDE_COLUMNS.items():
        if draw(_odd):
            continue  # left out: null, or "missing column" where it is NOT NULL
        row[column] = draw(_scalars if draw(_odd) else values)  # any value: out of range, of another type
    return row


@st.composite
def note_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"note": draw(_text | st.none() | _scalars), "doc": draw(_json)}
    for column in ("note", "doc"):
        if draw(_one_in(4)):
            del row[column]
    if draw(_one_in(4)):
        row["amount"] = draw(st.integers() | st.floats() | st.decimals(allow_nan=False).map(str) | _scalars)
    if draw(_odd):
        row[draw(st.sampled_from(["id", "ID", "nope", ""]) | _text)] = draw(_scalars)
    return row


ROWS = {"notes": note_rows(), "rides": ride_rows()}


def _csv_field(value: Any) -> str:
    if value is None:
        return ""  # unquoted empty: NULL
    text = value if isinstance(value, str) else json.dumps(value)
    return '"' + text.replace('"', '""') + '"' if not text or any(c in text for c in ',"\r\n') else text


def _fit_msgpack(value: Any) -> Any:
    """msgpack integers are 64-bit: a bigger one goes as a float, as a client would have to send it."""
    if isinstance(value, dict):
        return {k: _fit_msgpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fit_msgpack(v) for v in value]
    if type(value) is int and not -(2**63) <= value < 2**64:
        return float(value)
    return value


def _encode(media_type: str, rows: list[dict[str, Any]], one: bool) -> bytes:
    # json.dumps writes NaN and Infinity as bare words, which are not JSON: the gateway must refuse them.
    if media_type == NDJSON:
        return b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    if media_type in (MSGPACK, MSGPACK_ALIAS):
        return msgpack.packb(_fit_msgpack(rows[0] if one and rows else rows), use_bin_type=True)
    if media_type == CSV:
        header = list(dict.fromkeys(k for r in rows for k in r))
        lines = [",".join(_csv_field(h) for h in header)]
        lines += [",".join(_csv_field(r.get(h)) for h in header) for r in rows]
        return "\r\n".join(lines).encode() + b"\r\n"
    return json.dumps(rows[0] if one and rows else rows).encode()


@st.composite
def _mangled(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` mostly; else cut short, with a byte changed, with bytes after it, or random bytes."""
    how = draw(st.sampled_from(["as is"] * 6 + ["cut", "flip", "append", "random"] + ["as is"] * 6))
    if how == "cut" and body:
        return body[:draw(st.integers(0, len(body) - 1))]
    if how == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]
    if how == "append":
        return body + draw(st.binary(min_size=1, max_size=8))
    if how == "random":
        return draw(st.binary(max_size=64))
    return body


def bodies(media_type: str, table: str = "notes") -> st.SearchStrategy[bytes]:
    """Documents of ``media_type`` holding 1 to 5 rows for ``table``, now and then damaged."""
    docs = st.builds(_encode, st.just(media_type), st.lists(ROWS[table], min_size=1, max_size=5), st.booleans())
    return docs.flatmap(_mangled)


BINARY_TYPES = (NDJSON, MSGPACK, MSGPACK_ALIAS, CSV)


@pytest.fixture(scope="module")
def body_strategies() -> Iterator[None]:
    """Give the schema's ``format: binary`` media types real documents, for this module only."""
    for media_type in BINARY_TYPES:
        schemathesis.openapi.media_type(media_type, bodies(media_type))
    yield
    for media_type in BINARY_TYPES:
        MEDIA_TYPE_STRATEGIES.pop(media_type, None)
        for transport in (REQUESTS_TRANSPORT, ASGI_TRANSPORT, WSGI_TRANSPORT):
            transport.unregister_serializer(media_type)


# --- the module's gateway, sink and database --------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dsn(pg_server: str) -> Iterator[str]:
    rides = (ROOT / "schema" / "rides.sql").read_text()
    with scratch_database(pg_server, f"zingest_fuzz_{os.getpid()}", rides, NOTES_DDL) as dsn:
        yield dsn


@pytest.fixture(scope="module")
def gw(fuzz_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("fuzz")
    logs = folder / "logs"
    logs.mkdir()
    env = {
        **endpoints_env(folder),
        "ZINGEST_DATABASE__DSN": fuzz_dsn,
        "ZINGEST_GATEWAY__MAX_BODY_BYTES": str(MAX_BODY),
        "ZINGEST_GATEWAY__MAX_ROWS": str(MAX_ROWS),
        "ZINGEST_GATEWAY__WAIT_TIMEOUT_S": str(WAIT_TIMEOUT_S),
        "ZINGEST_GATEWAY__DRAIN_TIMEOUT_S": "1",
    }
    cluster = Cluster(env, logs, sinks=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def base_url(gw: Cluster) -> str:
    return f"http://{gw.host}:{gw.port}"


@pytest.fixture(scope="module")
def api_schema(base_url: str, body_strategies: None) -> schemathesis.BaseSchema:
    """The description the live gateway serves."""
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=CLIENT_TIMEOUT_S)


# --- sending a case and checking the answer -------------------------------------------------------------


def not_a_server_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """No 5xx, except a 503 that says when to retry (counted: there should be none here), and the
    documented 504 of ``?wait=true`` (a job not final within WAIT_TIMEOUT_S: the sink is stuck or slow)."""
    status = response.status_code
    if status == 503 and response.headers.get("retry-after"):
        REFUSALS.append(f"{case.method} {case.formatted_path}: {response.text[:200]}")
        return
    if status == 504 and case.operation.path == "/v1/ingest/{table}" and (case.query or {}).get("wait") in (
            "1", "true"):
        return
    assert status < 500, f"{status}: {response.text[:500]}"


def answered_in_time(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    assert response.elapsed < CLIENT_TIMEOUT_S, f"answered after {response.elapsed:.1f} s"


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance, answered_in_time]


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no timestamp: the same bytes on every run


COMPRESS: dict[str, Callable[[bytes], bytes]] = {"gzip": _gzip, "deflate": zlib.compress}


@dataclass
class Send:
    """A case and how to send it: ``compress`` encodes the body as its Content-Encoding says."""

    case: schemathesis.Case
    compress: bool = False


def call_and_check(case: schemathesis.Case, base_url: str,
                   data: bytes | Iterator[bytes] | None = None) -> schemathesis.Response:
    """Send ``case`` (with ``data`` as the body, if given) and run CHECKS; failures show a curl command."""
    kwargs = {} if data is None else {"data": data}
    try:
        response = case.call(base_url=base_url, timeout=CLIENT_TIMEOUT_S, **kwargs)
    except requests.Timeout:
        pytest.fail(f"no answer within {CLIENT_TIMEOUT_S} s to {case.as_curl_command(base_url=base_url)}")
    case.validate_response(response, checks=CHECKS, transport_kwargs={"base_url": base_url, **kwargs})
    if case.operation.path == "/v1/ingest/{table}" and response.status_code in (200, 202, 504):
        JOB_IDS.append(response.json()["job_id"])
    return response


def send(item: Send, base_url: str) -> schemathesis.Response:
    case = item.case
    coding = (case.headers or {}).get("Content-Encoding")
    if not item.compress or coding not in COMPRESS or case.body is None:
        return call_and_check(case, base_url)
    serialized = case.as_transport_kwargs(base_url=base_url)
    body = serialized["data"] if "data" in serialized else json.dumps(serialized["json"]).encode()
    return call_and_check(case, base_url, COMPRESS[coding](body))


# --- what to generate, per operation --------------------------------------------------------------------


def _cases(operation: schemathesis.APIOperation, **fixed: Any) -> st.SearchStrategy[schemathesis.Case]:
    """Cases that fit the schema, and cases that do not (where the operation has inputs to get wrong)."""
    positive = operation.as_strategy(GenerationMode.POSITIVE, **fixed)
    if not (operation.path_parameters or operation.query or operation.headers or operation.body):
        return positive
    return st.one_of(positive, operation.as_strategy(GenerationMode.NEGATIVE, **fixed))


@st.composite
def ingest_cases(draw: st.DrawFn, operation: schemathesis.APIOperation) -> Send:
    # A generated table name is all but never a table: most cases go to one that exists.
    table = draw(st.sampled_from(["notes", "rides", None, "notes", "rides"]))
    case = draw(_cases(operation, **({} if table is None else {"path_parameters": {"table": table}})))
    if table is not None and case.body is not None and not draw(_one_in(4)):
        media_type = case.media_type
        if media_type == JSON and table == "notes" and isinstance(case.body, dict | list) and draw(_one_in(2)):
            # The objects schemathesis generated, as jsonb values.
            if isinstance(case.body, dict):
                case.body = {"note": draw(_text), "doc": case.body}
            else:
                case.body = [{"doc": item} for item in case.body]
        elif media_type in (JSON, *BINARY_TYPES):
            case.body = draw(bodies(media_type, table))
    return Send(case, compress=not draw(_one_in(5)))


@st.composite
def job_cases(draw: st.DrawFn, operation: schemathesis.APIOperation) -> Send:
    case = draw(_cases(operation))
    # Ids this run was given (in memory, or read from the ledger), and ids of the shape the gateway
    # issues (looked up in the ledger), besides generated ones.
    kind = draw(st.sampled_from(["issued", "generated", "hex", "issued"]))
    if kind == "issued" and JOB_IDS:
        case.path_parameters = {"job_id": draw(st.sampled_from(JOB_IDS))}
    elif kind == "hex":
        case.path_parameters = {"job_id": draw(st.text("0123456789abcdef", min_size=32, max_size=32))}
    return Send(case)


STRATEGIES: dict[str, Callable[[schemathesis.APIOperation], st.SearchStrategy[Send]]] = {
    "ingest": ingest_cases, "job": job_cases,
    "healthz": lambda op: _cases(op).map(Send), "metrics": lambda op: _cases(op).map(Send),
}


# --- the fuzzer -------------------------------------------------------------------------------------------


def test_every_operation_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    served = {(op.ok().method.upper(), op.ok().path): op.ok().definition.raw.get("operationId")
              for op in api_schema.get_all_operations()}
    assert served == {v: k for k, v in OPERATIONS.items()}, "an operation was added or renamed: fuzz it too"


@pytest.fixture(scope="module")
def a_job(gw: Cluster) -> str:
    """One job issued before any look-up is fuzzed, so that look-ups can find one even when run alone."""
    r = gw.request("POST", "/v1/ingest/notes", b'{"note": "seed"}', {"Content-Type": JSON})
    assert r.status == 202, r
    JOB_IDS.append(r.body["job_id"])
    return r.body["job_id"]


# One Hypothesis test per operation, built on operation.as_strategy() here rather than with
# schemathesis.pytest.from_fixture(...).parametrize(): its lazy loader sets Node._nodeid, which
# pytest 9.2 no longer has (AttributeError with schemathesis 4.32.5).
@pytest.mark.parametrize("operation_id", list(OPERATIONS))
def test_fuzz(api_schema: schemathesis.BaseSchema, base_url: str, a_job: str, operation_id: str) -> None:
    method, path = OPERATIONS[operation_id]
    strategy = STRATEGIES[operation_id](api_schema[path][method])

    # derandomize: the same cases on every run; no shrinking: a failing case is reported as it was sent.
    @settings(max_examples=EXAMPLES[operation_id], deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(item=strategy)
    def run(item: Send) -> None:
        seen[send(item, base_url).status_code] += 1

    seen: collections.Counter[int] = collections.Counter()
    run()
    # The steering works: the cases reached the outcomes that matter, not just 404 or "unknown column".
    missed = [sorted(statuses) for statuses in REACHES[operation_id] if not statuses & set(seen)]
    assert not missed, f"{operation_id}: no case was answered {missed}; all answers: {dict(seen)}"


# --- hostile bodies, through the same harness ----------------------------------------------------------


def _gzip_bomb() -> bytes:
    return _gzip(b"[" + b" " * (MAX_BODY * 16) + b"]")


def _deep_msgpack(depth: int) -> bytes:
    return b"\x81\xa3doc" + b"\x91" * depth + b"\xc0"


def _random_bytes(seed: int) -> bytes:
    return random.Random(seed).randbytes(96)


def _rows_json(n: int) -> bytes:
    return json.dumps([{"note": str(i)} for i in range(n)]).encode()


@dataclass
class Hostile:
    body: bytes | Callable[[], bytes] | Callable[[], Iterator[bytes]]
    media_type: str
    expected: tuple[int, ...]
    table: str = "notes"
    headers: dict[str, str] | None = None
    query: dict[str, str] | None = None


def _h(case_id: str, *args: Any, **kwargs: Any) -> Any:
    return pytest.param(Hostile(*args, **kwargs), id=case_id)


_NINES = b"9" * 5000
HOSTILE = [
    # A body that is not what Content-Type says.
    _h("json-is-msgpack", msgpack.packb({"note": "x"}), JSON, (400,)),
    _h("msgpack-is-json", b'{"note": "x"}', MSGPACK, (400,)),
    _h("msgpack-alias-is-ndjson", b'{"note": "x"}\n{"note": "y"}\n', MSGPACK_ALIAS, (400,)),
    _h("ndjson-is-csv", b"note,doc\nx,{}\n", NDJSON, (400,)),
    _h("ndjson-is-json-array", b'[{"note": "x"}]', NDJSON, (400,)),
    _h("csv-is-msgpack", msgpack.packb([{"note": "x"}]), CSV, (400,)),
    _h("json-is-utf16", '{"note": "x"}'.encode("utf-16"), JSON, (400,)),
    _h("json-latin1-charset", '{"note": "\xe9"}'.encode("latin-1"), JSON, (400,),
       headers={"Content-Type": "application/json; charset=latin-1"}),
    # Random bytes, and msgpack that lies about its sizes.
    *(_h(f"msgpack-random-{n}", _random_bytes(n), MSGPACK, (400,)) for n in range(4)),
    _h("ndjson-random", _random_bytes(10), NDJSON, (400,)),
    _h("csv-random", _random_bytes(11), CSV, (400,)),
    _h("msgpack-array32-claims-4g-items", b"\xdd\xff\xff\xff\xff", MSGPACK, (400,)),
    _h("msgpack-map32-claims-4g-pairs", b"\xdf\xff\xff\xff\xff", MSGPACK, (400,)),
    _h("msgpack-str32-claims-4g-bytes", b"\x81\xa4note\xdb\xff\xff\xff\xff", MSGPACK, (400,)),
    _h("msgpack-truncated", msgpack.packb([{"note": "x" * 40}])[:-5], MSGPACK, (400,)),
    _h("msgpack-trailing-bytes", msgpack.packb({"note": "x"}) + b"\xc0", MSGPACK, (400,)),
    _h("msgpack-int-key", msgpack.packb({1: "x"}), MSGPACK, (400,)),
    _h("msgpack-timestamp", msgpack.packb({"note": msgpack.Timestamp(0)}), MSGPACK, (400,)),
    _h("msgpack-ext", msgpack.packb({"note": msgpack.ExtType(5, b"x")}), MSGPACK, (400,)),
    _h("msgpack-bin-in-text", msgpack.packb({"note": b"\xff"}, use_bin_type=True), MSGPACK, (400,)),
    _h("msgpack-invalid-utf8-str", b"\x81\xa4note\xa1\xff", MSGPACK, (400,)),
    _h("msgpack-nested-3000", _deep_msgpack(3000), MSGPACK, (400,)),
    _h("msgpack-nan-in-jsonb", msgpack.packb({"doc": float("nan")}), MSGPACK, (400,)),
    # Empty and near-empty bodies.
    _h("csv-empty", b"", CSV, (400,)),
    _h("csv-bom-only", b"\xef\xbb\xbf", CSV, (400,)),
    _h("csv-header-only", b"note,doc\r\n", CSV, (400,)),
    _h("csv-unclosed-quote", b'note\n"abc\n', CSV, (400,)),
    _h("csv-nul", b'note\n"a\x00b"\n', CSV, (400,)),
    _h("csv-duplicate-header", b"note,note\na,b\n", CSV, (400,)),
    # The JSON escape for NUL in a CSV field for jsonb: as NDJSON and JSON bodies, it is refused.
    _h("csv-jsonb-nul-escape", b'note,doc\r\nnul,"""\\u0000"""\r\n', CSV, (400,)),
    _h("json-empty", b"", JSON, (400,)),
    _h("ndjson-empty", b"", NDJSON, (400,)),
    _h("msgpack-empty", b"", MSGPACK, (400,)),
    # JSON that is not quite JSON, or that PostgreSQL cannot hold.
    _h("json-nan", b'{"doc": NaN}', JSON, (400,)),
    _h("json-nan-rides", b'{"id": 1, "to_lat": NaN}', JSON, (400,), table="rides"),
    _h("json-trailing-comma", b'[{"note": "x"},]', JSON, (400,)),
    _h("json-two-documents", b'{"note": "x"} {"note": "y"}', JSON, (400,)),
    _h("json-invalid-utf8", b'{"note": "\xff"}', JSON, (400,)),
    _h("json-lone-surrogate", b'{"note": "\\ud800"}', JSON, (400,)),
    _h("json-lone-surrogate-rides", b'{"id": "\\ud800"}', JSON, (400,), table="rides"),
    _h("json-nul-in-text", b'{"note": "a\\u0000b"}', JSON, (400,)),
    _h("json-nul-in-jsonb", b'{"doc": {"k": "a\\u0000b"}}', JSON, (400,)),
    _h("json-nul-in-jsonb-key", b'{"doc": {"a\\u0000b": 1}}', JSON, (400,)),
    _h("json-5000-digit-integer", b'{"amount": ' + _NINES + b"}", JSON, (202, 400)),
    _h("json-5000-digit-integer-in-jsonb", b'{"doc": ' + _NINES + b"}", JSON, (202, 400)),
    _h("json-5000-digit-integer-rides", b'{"id": ' + _NINES + b"}", JSON, (400,), table="rides"),
    _h("json-1e400", b'{"doc": 1e400, "amount": 1e400}', JSON, (202, 400)),
    _h("json-nested-30000", b'{"doc": ' + b"[" * 30000 + b"]" * 30000 + b"}", JSON, (400,)),
    _h("json-nested-30000-rides", b'{"id": ' + b"[" * 30000 + b"]" * 30000 + b"}", JSON, (400,), table="rides"),
    _h("json-bad-with-wait", b'[{"note": "x"}, {"nope": 1}]', JSON, (400,), query={"wait": "true"}),
    _h("json-3000-columns", json.dumps({f"c{i}": i for i in range(3000)}).encode(), JSON, (400,)),
    # Compression.
    _h("gzip-header-plain-body", b'{"note": "x"}', JSON, (400,), headers={"Content-Encoding": "gzip"}),
    _h("gzip-bomb", _gzip_bomb(), JSON, (413,), headers={"Content-Encoding": "gzip"}),
    _h("deflate-raw", zlib.compress(b'{"note": "raw"}')[2:-4], JSON, (202,), headers={"Content-Encoding": "deflate"}),
    _h("gzip-two-members", _gzip(b'[{"note": "a"},') + _gzip(b'{"note": "b"}]'), JSON, (202,),
       headers={"Content-Encoding": "gzip"}),
    _h("gzip-truncated", _gzip(b'{"note": "x"}')[:-6], JSON, (400,), headers={"Content-Encoding": "gzip"}),
    _h("encoding-br", b'{"note": "x"}', JSON, (415,), headers={"Content-Encoding": "br"}),
    _h("encoding-gzip-twice", _gzip(_gzip(b'{"note": "x"}')), JSON, (415,),
       headers={"Content-Encoding": "gzip, gzip"}),
    # Limits.
    _h("body-over-limit", b'{"note": "' + b"x" * MAX_BODY + b'"}', JSON, (413,)),
    _h("body-over-limit-chunked", lambda: iter([b'{"note": "'] + [b"x" * 4096] * (MAX_BODY // 4096 + 1) + [b'"}']),
       JSON, (413,)),
    _h("rows-over-limit", _rows_json(MAX_ROWS + 1), JSON, (413,)),
    _h("rows-at-limit", _rows_json(MAX_ROWS), JSON, (202,)),
    _h("ndjson-rows-over-limit", b"".join(b'{"note": "x"}\n' for _ in range(MAX_ROWS + 1)), NDJSON, (413,)),
    _h("msgpack-rows-over-limit", msgpack.packb([{"note": "x"}] * (MAX_ROWS + 1)), MSGPACK, (413,)),
    _h("csv-rows-over-limit", b"note\n" + b"x\n" * (MAX_ROWS + 1), CSV, (413,)),
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_body(api_schema: schemathesis.BaseSchema, base_url: str, hostile: Hostile) -> None:
    body = hostile.body() if callable(hostile.body) else hostile.body
    # Bytes go in the case, so that a failure's curl command carries them; a stream is sent chunked.
    case = api_schema["/v1/ingest/{table}"]["POST"].Case(
        path_parameters={"table": hostile.table}, headers=hostile.headers, query=hostile.query,
        media_type=hostile.media_type, body=body if isinstance(body, bytes) else b"")
    response = call_and_check(case, base_url, data=None if isinstance(body, bytes) else body)
    assert response.status_code in hostile.expected, (response.status_code, response.text[:500])


def _wait_final(gw: Cluster, job_id: str) -> dict:
    return wait_until(lambda: (j := gw.job(job_id))["state"] != "accepted" and j, 10,
                      what=f"job {job_id} to become final")


def test_wait_for_a_job_that_fails_and_one_that_is_partial(api_schema: schemathesis.BaseSchema, base_url: str,
                                                           gw: Cluster) -> None:
    """The sink's verdicts (failed, partial) answered with ?wait=true, checked against the schema too."""
    operation = api_schema["/v1/ingest/{table}"]["POST"]
    ride = {"id": 9_000_000_001, "user_id": 1, "vehicle_model_id": 12, "travel_type_id": 2,
            "from_date": "2013-01-01T09:00:00+05:30", "online_booking": True, "mobile_site_booking": False,
            "booking_created": "2013-01-01T08:44:00+05:30", "car_cancellation": False}
    for body, state in ((ride, "committed"), (ride, "failed"), ([ride, {**ride, "id": 9_000_000_002}], "partial")):
        case = operation.Case(path_parameters={"table": "rides"}, query={"wait": "true"}, media_type=JSON, body=body)
        response = call_and_check(case, base_url)
        assert response.status_code in (200, 504), response.text
        job = response.json()
        if response.status_code == 504:  # not final within WAIT_TIMEOUT_S, as on a slow machine: wait longer
            job = _wait_final(gw, job["job_id"])
        assert job["state"] == state, job


# --- afterwards ----------------------------------------------------------------------------------------------


def test_no_refusals_and_both_processes_still_run(gw: Cluster) -> None:
    """Runs last: nothing crashed, the sink stayed connected (no 503), every job accepted became final."""
    assert gw.gateway is not None and gw.gateway.poll() is None, f"the gateway exited\n{gw.log_text()}"
    assert gw.sinks[0] is not None and gw.sinks[0].poll() is None, f"the sink exited\n{gw.log_text()}"
    for log in sorted(gw.logs.glob("*.log")):
        text = log.read_text(errors="replace")
        at = text.find("Traceback")
        assert at < 0, f"{log.name} holds a traceback:\n{text[at:at + 3000]}"
    assert REFUSALS == [], f"{len(REFUSALS)} answers were 503 with the sink connected: {REFUSALS[:5]}"
    assert (gw.health() or {}).get("sinks_connected") == 1

    def pending() -> list[str]:
        return [job_id for job_id in sorted(set(JOB_IDS)) if gw.job(job_id).get("state") in (None, "accepted")]
    try:
        wait_until(lambda: not pending(), 15, interval=0.1, what="every job accepted to become final")
    except AssertionError:
        raise AssertionError(f"{len(pending())} of {len(set(JOB_IDS))} jobs are still not final, e.g. "
                             f"{pending()[:3]}\n{gw.log_text()}") from None
