"""Property-based round trip: random values through a real gateway, a real sink and PostgreSQL, read back.

What lands must equal what was sent, for every column type the gateway
checks: text with any Unicode (backslashes, tabs, newlines, quotes, \\N), empty
string against null, integers at the edges of each width, numeric beyond
bigint, floats with NaN and infinities, timestamps with and without offsets,
dates, uuids, json and jsonb with nested values, and arrays.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cluster import Cluster
from tests.conftest import endpoints_env, scratch_database

TABLE_DDL = """
CREATE TABLE everything (
    id          bigint PRIMARY KEY,
    t           text,
    vc          varchar(12),
    i2          smallint,
    i4          integer,
    i8          bigint,
    num         numeric,
    f8          double precision,
    b           boolean,
    tstz        timestamptz,
    ts          timestamp,
    d           date,
    u           uuid,
    jb          jsonb,
    js          json,
    ta          text[],
    ia          integer[]
)
"""

EXAMPLES = 25  # each example is one request of up to 8 rows; the budget keeps CI within seconds


@pytest.fixture(scope="module")
def everything(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    tmp = tmp_path_factory.mktemp("roundtrip")
    with scratch_database(pg_server, f"zingest_roundtrip_{os.getpid()}", TABLE_DDL) as dsn:
        env = {**endpoints_env(tmp), "ZINGEST_DATABASE__DSN": dsn, "ZINGEST_SINK__BATCH_LINGER_MS": "1"}
        cluster = Cluster(env, tmp, sinks=1).start()
        try:
            yield cluster, dsn
        finally:
            cluster.stop()


# -- strategies ---------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
tricky = st.sampled_from(["", "\\N", "\\", "a\tb", "line\nbreak", "cr\rlf\r\n", '"quoted"', "'", "NULL", " "])
texts = st.one_of(tricky, text)
offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
naive = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
aware = st.builds(lambda dt, tz: dt.replace(tzinfo=tz), naive, offsets)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
floats = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308]))
numerics = st.one_of(st.integers(-(10**30), 10**30),  # beyond bigint on purpose
                     st.decimals(min_value=Decimal("-1e30"), max_value=Decimal("1e30"),
                                 allow_nan=False, allow_infinity=False))


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


rows = st.fixed_dictionaries({}, optional={
    "t": maybe(texts),
    "vc": maybe(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)),
    "i2": maybe(st.integers(-(2**15), 2**15 - 1)),
    "i4": maybe(st.integers(-(2**31), 2**31 - 1)),
    "i8": maybe(st.integers(-(2**63), 2**63 - 1)),
    "num": maybe(numerics),
    "f8": maybe(floats),
    "b": maybe(st.booleans()),
    "tstz": maybe(st.one_of(aware, naive)),
    "ts": maybe(naive),
    "d": maybe(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31))),
    "u": maybe(st.uuids()),
    "jb": json_values,
    "js": json_values,
    "ta": maybe(st.lists(maybe(texts), max_size=4)),
    "ia": maybe(st.lists(maybe(st.integers(-(2**31), 2**31 - 1)), max_size=4)),
})


# -- sending and comparing ------------------------------------------------------------------------

def wire_value(name: str, value: Any) -> Any:
    """How a client sends the value in JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def expected(name: str, value: Any) -> Any:
    """What reading the column back must give."""
    if name == "tstz" and isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # the documented rule: no offset means UTC
    if name == "num" and value is not None:
        return Decimal(value) if not isinstance(value, Decimal) else value
    return value


def same_json(a: Any, b: Any) -> bool:
    """JSON equality with numbers compared by decimal value (jsonb keeps numbers as numeric)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return Decimal(repr(a)) == Decimal(repr(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    return a == b


def same(name: str, sent: Any, got: Any) -> bool:
    want = expected(name, sent)
    if name in ("jb", "js"):
        return same_json(want, got)
    if name == "f8" and want is not None:
        return (math.isnan(want) and math.isnan(got)) or (want == got and math.copysign(1, want) ==
                                                           math.copysign(1, got))
    return want == got


_ids = itertools.count(1)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
@given(batch=st.lists(rows, min_size=1, max_size=8))
def test_values_land_exactly_as_sent(everything: tuple[Cluster, str], batch: list[dict[str, Any]]) -> None:
    cluster, dsn = everything
    sent = [{"id": next(_ids), **row} for row in batch]
    # The standard library's encoder: it writes integers past 64 bits, as a client may.
    body = "\n".join(json.dumps({k: wire_value(k, v) for k, v in row.items()}, allow_nan=False)
                     for row in sent).encode()
    r = cluster.request("POST", "/v1/ingest/everything?wait=true", body,
                        {"Content-Type": "application/x-ndjson"}, timeout=30)
    assert r.status == 200, r.body
    assert r.body["state"] == "committed", r.body
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        for row in sent:
            names = [k for k in row if k != "id"]
            if not names:
                continue
            cur = conn.execute(f"SELECT {', '.join(names)} FROM everything WHERE id = %s", (row["id"],))
            got = cur.fetchone()
            assert got is not None, f"row {row['id']} did not land"
            for name, value in zip(names, got):
                assert same(name, row[name], value), f"{name}: sent {row[name]!r}, got {value!r}"
