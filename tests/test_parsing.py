"""gateway.parsing: request bodies become groups of rows, and errors say where (line/index) and which column."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalog import Column, Table
from gateway.errors import BodyError
from gateway.formats import JSON, MSGPACK, NDJSON, Limits, parse_body
from gateway.validate import FEW_ROWS

LIMITS = Limits(max_body_bytes=1 << 20, max_rows=1000, max_depth=32, max_string_bytes=1 << 16)


def parse_rows(body: bytes, media_type: str, table: Table):
    return parse_body(body, media_type, table, LIMITS)


def make_table(**types: str) -> Table:
    return Table("t", {name: Column(name, data_type, True, False) for name, data_type in types.items()})


TABLE = make_table(id="bigint", name="text", score="double precision", ok="boolean", doc="jsonb", raw="json")


def groups_of(body: bytes, media_type: str, table: Table = TABLE) -> list[tuple[tuple[str, ...], list[list]]]:
    return [(g.columns, [list(r) for r in g.rows]) for g in parse_rows(body, media_type, table)]


ACCEPTED = {
    "json object": (JSON, b'{"id": 1, "name": "a"}', [(("id", "name"), [[1, "a"]])]),
    "json array": (
        JSON, b'[{"id": 1, "name": "a"}, {"id": 2, "name": null}]',
        [(("id", "name"), [[1, "a"], [2, None]])],
    ),
    "json array, whitespace around": (JSON, b' \n [ {"id": 1} ] \n', [(("id",), [[1]])]),
    "ndjson": (NDJSON, b'{"id": 1, "ok": true}\n{"id": 2, "ok": false}', [(("id", "ok"), [[1, True], [2, False]])]),
    "ndjson with blank lines and crlf": (
        NDJSON, b'\n{"id": 1}\r\n\n   \n{"id": 2}\r\n\n',
        [(("id",), [[1], [2]])],
    ),
    "values keep their json types": (
        JSON, '{"id": 9007199254740993, "score": -1.5e-7, "name": "ünï ✓", "ok": null}'.encode(),
        [(("id", "score", "name", "ok"), [[9007199254740993, -1.5e-7, "ünï ✓", None]])],
    ),
}


@pytest.mark.parametrize("media_type,body,expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_bodies(media_type: str, body: bytes, expected: list) -> None:
    assert groups_of(body, media_type) == expected


@pytest.mark.parametrize("media_type", [JSON, NDJSON])
def test_different_key_sets_make_separate_groups(media_type: str) -> None:
    objects = [
        {"id": 1, "name": "a"},
        {"id": 2},
        {"id": 3, "name": "c"},
        {"id": 4, "score": 0.5, "ok": True},
        {"id": 5},
    ]
    body = orjson.dumps(objects) if media_type == JSON else b"\n".join(orjson.dumps(o) for o in objects)
    assert groups_of(body, media_type) == [
        (("id", "name"), [[1, "a"], [3, "c"]]),
        (("id",), [[2], [5]]),
        (("id", "score", "ok"), [[4, 0.5, True]]),
    ]


@pytest.mark.parametrize("media_type", [JSON, NDJSON])
def test_as_many_keys_but_other_ones_make_another_group(media_type: str) -> None:
    objects = [{"id": 1, "name": "a"}, {"id": 2, "score": 0.5}, {"name": "c", "id": 3}]
    body = orjson.dumps(objects) if media_type == JSON else b"\n".join(orjson.dumps(o) for o in objects)
    groups = parse_rows(body, media_type, TABLE)
    assert [(g.columns, [list(r) for r in g.rows], g.positions) for g in groups] == [
        (("id", "name"), [[1, "a"], [3, "c"]], [0, 2]),
        (("id", "score"), [[2, 0.5]], [1]),
    ]


def test_one_shape_carries_no_positions() -> None:
    (group,) = parse_rows(orjson.dumps([{"id": 1, "name": "a"}, {"name": "b", "id": 2}]), JSON, TABLE)
    assert (group.columns, [list(r) for r in group.rows], group.positions) == (("id", "name"), [[1, "a"], [2, "b"]],
                                                                                None)


@pytest.mark.parametrize("media_type", [JSON, NDJSON])
def test_same_key_set_in_another_order_joins_the_group_aligned(media_type: str) -> None:
    objects = [
        {"id": 1, "name": "a", "score": 1.0},
        {"score": 2.0, "id": 2, "name": "b"},
        {"name": "c", "score": 3.0, "id": 3},
        {"id": 4},
        {"name": "e", "id": 5, "score": 5.0},  # back to the first set, after another shape
    ]
    body = orjson.dumps(objects) if media_type == JSON else b"\n".join(orjson.dumps(o) for o in objects)
    assert groups_of(body, media_type) == [
        (("id", "name", "score"), [[1, "a", 1.0], [2, "b", 2.0], [3, "c", 3.0], [5, "e", 5.0]]),
        (("id",), [[4]]),
    ]


def test_json_columns_get_json_text() -> None:
    values = [
        {"a": {"b": [1, 2.5, None]}, "s": "x"},
        [1, "two", [3], {}],
        "just a string",
        42,
        -0.25,
        True,
        None,
        {},
        [],
    ]
    rows = [{"id": i, "doc": v, "raw": v} for i, v in enumerate(values)]
    (group,) = parse_rows(orjson.dumps(rows), JSON, TABLE)
    assert group.columns == ("id", "doc", "raw")
    for i, (row, value) in enumerate(zip(group.rows, values, strict=True)):
        assert row[0] == i
        for text in row[1:]:
            if value is None:
                assert text is None
                continue
            assert isinstance(text, str)
            assert orjson.loads(text) == value
    assert group.rows[2][1] == '"just a string"'
    assert group.rows[6][1:] == [None, None]  # JSON null is SQL NULL, in json columns as in all others
    assert group.rows[3][1] == "42"


def test_json_columns_in_one_group_only_are_serialised_there() -> None:
    body = b'{"id": 1, "doc": {"k": 1}}\n{"id": 2, "name": "n"}\n{"doc": [1], "id": 3}'
    assert groups_of(body, NDJSON) == [
        (("id", "doc"), [[1, '{"k":1}'], [3, "[1]"]]),
        (("id", "name"), [[2, "n"]]),
    ]


def body_error(body: bytes, media_type: str, table: Table = TABLE) -> BodyError:
    with pytest.raises(BodyError) as info:
        parse_rows(body, media_type, table)
    return info.value


# (media type, body, words the message must hold, expected as_json() minus "error")
REJECTED = {
    "invalid json": (JSON, b'{"id": 1,', ["line 1", "not valid JSON"], {"line": 1}),
    "invalid json in array": (JSON, b'[{"id": 1}, {"id": }]', ["line 1", "not valid JSON"], {"line": 1}),
    "invalid ndjson line": (NDJSON, b'{"id": 1}\n{"id": 2\n{"id": 3}', ["line 2", "not valid JSON"], {"line": 2}),
    "invalid ndjson line after blank lines": (
        NDJSON, b'\n\n{"id": 1}\n\n{oops}\n', ["line 5", "not valid JSON"], {"line": 5},
    ),
    "non-object in array": (JSON, b'[{"id": 1}, {"id": 2}, [3]]', ["index 2", "expected an object", "got array"],
                            {"index": 2}),
    "null in array": (JSON, b'[null]', ["index 0", "expected an object"], {"index": 0}),
    "non-object ndjson line": (NDJSON, b'{"id": 1}\n\n"text"\n', ["line 3", "expected an object", "got string"],
                               {"line": 3}),
    "unknown column in json object": (JSON, b'{"id": 1, "nmae": "x"}', ["index 0", "'nmae'"],
                                      {"index": 0, "column": "nmae"}),
    "unknown column in json array": (JSON, b'[{"id": 1}, {"id": 2}, {"id": 3, "bogus": 1}]',
                                     ["index 2", "'bogus'", "'t'"], {"index": 2, "column": "bogus"}),
    "unknown column in ndjson": (NDJSON, b'{"id": 1}\n\n{"id": 2, "bogus": 1}', ["line 3", "'bogus'"],
                                 {"line": 3, "column": "bogus"}),
    "empty object": (JSON, b'[{"id": 1}, {}]', ["index 1", "no columns"], {"index": 1}),
    "empty json body": (JSON, b"", ["no rows"], {}),
    "whitespace json body": (JSON, b" \r\n", ["no rows"], {}),
    "empty json array": (JSON, b"[]", ["no rows"], {}),
    "empty ndjson body": (NDJSON, b"", ["no rows"], {}),
    "blank ndjson body": (NDJSON, b"\n\n  \n", ["no rows"], {}),
    "top-level number": (JSON, b"42", ["expected an object or an array of objects", "got number"], {}),
    "top-level string": (JSON, b'"rows"', ["expected an object or an array of objects", "str"], {}),
    "top-level null": (JSON, b"null", ["expected an object or an array of objects", "got null"], {}),
}


@pytest.mark.parametrize("media_type,body,words,located", REJECTED.values(), ids=REJECTED.keys())
def test_rejected_bodies(media_type: str, body: bytes, words: list[str], located: dict) -> None:
    exc = body_error(body, media_type)
    for word in words:
        assert word in str(exc)
    out = exc.as_json()
    assert out.pop("error") == str(exc)
    assert out == located


def test_body_error_is_a_value_error_with_its_parts() -> None:
    exc = body_error(b'{"id": 1}\n{"id": 2, "zz": 0}', NDJSON)
    assert isinstance(exc, ValueError)
    assert (exc.where, exc.column) == ("line 2", "zz")
    assert str(exc) == "line 2: unknown column 'zz' for table 't'"
    assert exc.as_json() == {"error": str(exc), "line": 2, "column": "zz"}


TIMES = make_table(d="date", ts="timestamp with time zone", t="time without time zone")
GOOD_TIMES = {"d": "2013-05-31", "ts": "2013-05-31T22:25:00+05:30", "t": "22:25:00.5"}


@pytest.mark.parametrize("column, bad", [
    ("d", "2013-05-31\n2013-06-01"),
    ("ts", "2013-05-31T22:25:00Z\n2013-05-31T22:26:00Z"),
    ("t", "22:25\n22:26"),
    ("ts", "2013-05-31T22:25:00Z\n"),
    ("d", "20130531"),
    ("ts", "2013-02-30T00:00:00Z"),
    ("d", "2013-W22-5"),  # a week date: Python reads it, PostgreSQL does not
    ("d", "2013-05-3\u0661"),  # an Arabic-Indic digit
    ("ts", ""),
    ("t", "22:25:00.1234567"),
])
def test_a_bad_date_or_time_among_good_ones_is_named(column: str, bad: str) -> None:
    """Columns are checked whole (the values joined by newlines, reduced to their shapes): a value
    holding a newline must not pass as two good ones."""
    rows = [GOOD_TIMES, GOOD_TIMES, {**GOOD_TIMES, column: bad}, GOOD_TIMES]
    exc = body_error(orjson.dumps(rows), JSON, TIMES)
    assert exc.as_json() == {"error": str(exc), "index": 2, "column": column}


def test_good_dates_and_times_pass_whole() -> None:
    rows = [GOOD_TIMES, {**GOOD_TIMES, "ts": "2013-05-31 22:25Z", "t": "22:25"}, {"d": None, "ts": None, "t": None}]
    ((columns, got),) = groups_of(orjson.dumps(rows), JSON, TIMES)
    assert columns == ("d", "ts", "t") and len(got) == 3


# Every type the column-wide fast path (validate._all_fine) knows, beside values of every JSON kind:
# right, wrong, out of range, text PostgreSQL reads, and text it does not; NaN and infinities, nested too,
# which msgpack can carry and JSON text cannot (orjson writes them as null).
CHECKED_TYPES = make_table(i2="smallint", i4="integer", i8="bigint", r="real", f="double precision",
                           b="boolean", s="text", vc="character varying(3)", d="date",
                           ts="timestamp with time zone", tm="time without time zone", j="json", jb="jsonb")
SOME_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(-(2**16), 2**16),
    st.floats(), st.floats(-1e-40, 1e-40), st.sampled_from([3.4028235e38, 3.4028236e38]), st.text(max_size=5),
    st.sampled_from(["42", " -7 ", "1e3", "NaN", "t", "no", "2013-05-31", "2013-02-30", "22:25:00.5",
                     "2013-05-31T22:25:00+05:30", "2013-05-31 22:25Z", "2013-05-31T22:25:00+16:00",
                     "infinity", "abcd", "5\x1f", " 5\v", "1.5\xa0", "t\xa0", "\x1ct"]),
    st.lists(st.one_of(st.integers(0, 3), st.floats()), max_size=2),
    st.dictionaries(st.text(max_size=2), st.one_of(st.integers(-9, 9), st.floats()), max_size=2),
)


@given(row=st.fixed_dictionaries({name: SOME_VALUES for name in CHECKED_TYPES.columns}),
       media_type=st.sampled_from([JSON, MSGPACK]))
@settings(max_examples=400, deadline=None)
def test_a_few_rows_are_judged_as_many_are(row: dict, media_type: str) -> None:
    """Requests of up to validate.FEW_ROWS rows skip the column-wide passes and check value by value;
    more rows take the passes first. The same row must get the same verdict and error either way."""
    def verdict(rows: list[dict]) -> dict | None:
        body = orjson.dumps(rows) if media_type == JSON else msgpack.packb(rows)
        try:
            parse_rows(body, media_type, CHECKED_TYPES)
        except BodyError as exc:
            return exc.as_json()
        return None

    few, many = [row] * FEW_ROWS, [row] * (FEW_ROWS + 1)
    assert verdict(few) == verdict(many)


@pytest.mark.parametrize("column, value", [
    ("i4", "5\x1f"), ("i4", "\x1d7"), ("i4", "5\u00a0"), ("i2", "\u30001"),
    ("f", "\x1c1.5"), ("f", "1.5\u00a0"), ("b", "t\u00a0"), ("b", "\x1ft"), ("n", "1.5\u2003"),
])
def test_number_and_boolean_text_may_be_padded_only_with_what_postgresql_skips(column: str, value: str) -> None:
    table = make_table(i2="smallint", i4="integer", f="double precision", b="boolean", n="numeric")
    exc = body_error(orjson.dumps({column: value}), JSON, table)
    assert exc.as_json() == {"error": str(exc), "index": 0, "column": column}
    ((_, rows),) = groups_of(orjson.dumps({column: value.strip(" \x1c\x1d\x1f\u00a0\u3000\u2003") + " \t\v\f\r\n"}),
                             JSON, table)
    assert len(rows) == 1


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("column", ["j", "jb"])
def test_msgpack_nan_nested_in_a_json_value_is_refused_in_any_request(column: str, rows: int) -> None:
    body = msgpack.packb([{column: {"x": float("nan"), "y": [float("-inf")]}}] * rows)
    exc = body_error(body, MSGPACK, CHECKED_TYPES)
    assert exc.as_json() == {"error": str(exc), "index": 0, "column": column}
    assert "NaN" in str(exc)


@pytest.mark.parametrize("value, words", [
    ([[1], [2, 3]], "different lengths"), ([1, [2]], "a mix"), ([None, [1]], "a mix"), ([[1], None], "a mix"),
    ([[[[[[[1]]]]]]], "more than 6 dimensions"),
])
def test_arrays_postgresql_cannot_read_are_refused(value: list, words: str) -> None:
    exc = body_error(orjson.dumps({"ia": value}), JSON, make_table(ia="integer[]"))
    assert words in str(exc) and exc.column == "ia"


@pytest.mark.parametrize("value", [[[1, 2], [3, 4]], [[None, 2], [3, None]], [[], []], [], [[[[[[1]]]]]]])
def test_rectangular_arrays_pass(value: list) -> None:
    ((_, rows),) = groups_of(orjson.dumps({"ia": value}), JSON, make_table(ia="integer[]"))
    assert rows == [[value]]


def test_a_lone_surrogate_in_text_is_refused_with_its_row_and_column() -> None:
    """Only the exact JSON parser (tables with numeric columns) lets a lone \\ud800 escape through."""
    table = make_table(n="numeric", s="text")
    for rows in (1, FEW_ROWS + 1):
        exc = body_error(b"[" + b",".join([b'{"n": 1, "s": "a\\ud800"}'] * rows) + b"]", JSON, table)
        assert exc.as_json() == {"error": str(exc), "index": 0, "column": "s"}


def test_real_takes_its_largest_value_as_postgresql_prints_it() -> None:
    table = make_table(r="real")
    ((_, rows),) = groups_of(orjson.dumps([{"r": 3.4028235e38}, {"r": "-3.4028235e38"}]), JSON, table)
    assert len(rows) == 2
    exc = body_error(orjson.dumps({"r": 3.4028236e38}), JSON, table)
    assert "out of range for real" in str(exc)
