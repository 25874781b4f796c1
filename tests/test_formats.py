"""gateway.formats: Content-Encoding, the four media types, and the limits, each error naming where and why.

read_body is tested through a real aiohttp server on a random loopback port; the CSV reader is
checked against PostgreSQL's own COPY ... (FORMAT csv) on the same bodies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import orjson
import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import event, given, settings
from hypothesis import strategies as st
from psycopg import sql

from gateway.errors import BodyError
from gateway.formats import (
    CSV,
    JSON,
    MEDIA_TYPES,
    MSGPACK,
    MSGPACK_ALIAS,
    NDJSON,
    BodyDecoder,
    LimitError,
    Limits,
    UnsupportedEncoding,
    content_coding,
    csv_rows,
    csv_table,
    objects,
    read_body,
    status_of,
)

MiB = 1024 * 1024
LIMITS = Limits(max_body_bytes=MiB, max_rows=100_000, max_depth=32, max_string_bytes=MiB)


def limits(**changes: int) -> Limits:
    return dataclasses.replace(LIMITS, **changes)


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def bomb(decoded_bytes: int, wbits: int = 16 + zlib.MAX_WBITS) -> bytes:
    """``decoded_bytes`` zeros, compressed about 1000:1, made without holding them all."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(MiB)
    parts = [c.compress(zeros) for _ in range(decoded_bytes // MiB)]
    return b"".join(parts) + c.flush()


def decode(coding: str, body: bytes, max_body_bytes: int = MiB, chunk: int = 0) -> bytes:
    decoder = BodyDecoder(coding, max_body_bytes)
    for i in range(0, len(body), chunk or max(len(body), 1)):
        decoder.feed(body[i:i + (chunk or len(body))])
    return decoder.finish()


def rows_of(body: bytes, media_type: str, lim: Limits = LIMITS) -> list[tuple[str, Any]]:
    return list(objects(body, media_type, lim))


def assert_error(exc: BodyError, kind: type[BodyError], status: int, where: str | None, column: str | None,
                 *words: str) -> None:
    """The exception's type and status, where/column as attributes, and each word in the message."""
    assert type(exc) is kind, f"{type(exc).__name__}: {exc}"
    assert status_of(exc) == status
    assert exc.where == where
    assert exc.column == column
    message = str(exc)
    if where is not None:
        assert message.startswith(f"{where}: "), message
    if column is not None:
        assert repr(column) in message, message
    for word in words:
        assert word in message, message


# --- Content-Encoding, pure -----------------------------------------------------------------------

PAYLOAD = orjson.dumps([{"id": i, "name": f"row {i} ✓"} for i in range(2000)])

ENCODED = {
    "identity": ("identity", PAYLOAD),
    "gzip": ("gzip", gzip.compress(PAYLOAD)),
    "gzip, two members back to back": ("gzip", gzip.compress(PAYLOAD[:100]) + gzip.compress(PAYLOAD[100:])),
    "deflate, zlib-wrapped": ("deflate", zlib.compress(PAYLOAD)),
    "deflate, raw": ("deflate", raw_deflate(PAYLOAD)),
}


@pytest.mark.parametrize("coding,body", ENCODED.values(), ids=ENCODED.keys())
@pytest.mark.parametrize("chunk", [0, 1, 7, 4096], ids=lambda n: f"chunks of {n or 'all'}")
def test_decoder_undoes_each_coding_in_any_chunking(coding: str, body: bytes, chunk: int) -> None:
    assert decode(coding, body, chunk=chunk) == PAYLOAD


def test_decoder_stops_a_bomb_after_one_byte_past_the_limit() -> None:
    body = bomb(50 * MiB)
    assert len(body) < 100_000  # 50 MiB of zeros really is a bomb
    decoder = BodyDecoder("gzip", MiB)
    with pytest.raises(LimitError) as info:
        decoder.feed(body)
    assert_error(info.value, LimitError, 413, None, None, "gateway.max_body_bytes (1048576 bytes) once decompressed")
    assert decoder.produced <= MiB + 1  # never inflated past the limit


def test_decoder_stops_a_deflate_bomb_fed_in_chunks() -> None:
    body = bomb(20 * MiB, wbits=zlib.MAX_WBITS)
    decoder = BodyDecoder("deflate", MiB)
    with pytest.raises(LimitError, match="once decompressed"):
        for i in range(0, len(body), 1000):
            decoder.feed(body[i:i + 1000])
    assert decoder.produced <= MiB + 1


@pytest.mark.parametrize("coding,body", [
    ("identity", bytes(2001)), ("gzip", gzip.compress(bytes(range(256)) * 40, 0)),
], ids=["identity", "gzip, counted as received"])
def test_decoder_counts_the_bytes_received(coding: str, body: bytes) -> None:
    with pytest.raises(LimitError) as info:
        decode(coding, body, max_body_bytes=2000, chunk=500)
    what = "body" if coding == "identity" else "compressed body"
    assert_error(info.value, LimitError, 413, None, None, f"{what} is larger than gateway.max_body_bytes (2000 bytes)")
    assert info.value.as_json() == {"error": str(info.value), "limit": "gateway.max_body_bytes"}


def test_decoder_exactly_at_the_limit_is_accepted() -> None:
    data = b"x" * 1000
    assert decode("identity", data, max_body_bytes=1000) == data
    assert decode("gzip", gzip.compress(data), max_body_bytes=1000) == data


GZ = gzip.compress(PAYLOAD)
BROKEN = {
    "gzip cut short": ("gzip", GZ[: len(GZ) // 2], "body is not valid gzip: the stream ends"),
    "gzip without its trailer": ("gzip", GZ[:-4], "body is not valid gzip: the stream ends"),
    "gzip, bad header": ("gzip", b"not gzip at all", "body is not valid gzip: Error -3"),
    "gzip, corrupt data": ("gzip", GZ[:20] + bytes(b ^ 0xFF for b in GZ[20:40]) + GZ[40:], "body is not valid gzip"),
    "gzip, garbage after a member": ("gzip", GZ + b"garbage!", "body is not valid gzip"),
    "gzip, empty": ("gzip", b"", "body is not valid gzip: the stream ends"),
    "deflate cut short": ("deflate", zlib.compress(PAYLOAD)[:100], "body is not valid deflate: the stream ends"),
    "deflate, one byte": ("deflate", b"x", "body is not valid deflate"),
    "deflate, data after the end": ("deflate", zlib.compress(b"{}") + b"xx", "2 bytes after the end of the stream"),
}


@pytest.mark.parametrize("coding,body,words", BROKEN.values(), ids=BROKEN.keys())
def test_decoder_refuses_broken_streams(coding: str, body: bytes, words: str) -> None:
    with pytest.raises(BodyError) as info:
        decode(coding, body)
    assert_error(info.value, BodyError, 400, None, None, words)


@pytest.mark.parametrize("header,coding", [
    (None, "identity"), ("", "identity"), ("identity", "identity"), ("gzip", "gzip"), ("GZip", "gzip"),
    ("x-gzip", "gzip"), (" deflate ", "deflate"), ("gzip, identity", "gzip"),
])
def test_content_coding_accepted(header: str | None, coding: str) -> None:
    assert content_coding(header) == coding


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, gzip", "gzip, deflate", "bogus"])
def test_content_coding_refused_with_415_naming_the_accepted_ones(header: str) -> None:
    with pytest.raises(UnsupportedEncoding) as info:
        content_coding(header)
    assert_error(info.value, UnsupportedEncoding, 415, None, None, repr(header), "identity, gzip, deflate")


# --- read_body through a real aiohttp server -------------------------------------------------------


async def _echo(request: web.Request) -> web.Response:
    """What the ingest handler will do: read_body, then map BodyError to its status."""
    lim = Limits(int(request.query.get("max", MiB)), 10, 32, MiB)
    try:
        body = await read_body(request, lim)
    except BodyError as exc:
        return web.json_response(exc.as_json(), status=status_of(exc))
    except RuntimeError as exc:
        return web.json_response({"error": str(exc)}, status=500)
    return web.Response(body=body)


def post(body: bytes | Callable[[], AsyncIterator[bytes]], headers: dict[str, str], query: str = "",
         auto_decompress: bool = False) -> tuple[int, bytes]:
    """POST ``body`` as sent (no client-side compression) to a fresh server; its status and body."""
    async def run() -> tuple[int, bytes]:
        app = web.Application(handler_args={"auto_decompress": auto_decompress})
        app.router.add_post("/", _echo)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            data = body() if callable(body) else body
            async with client.post(f"/{query}", data=data, headers=headers) as resp:
                return resp.status, await resp.read()
    return asyncio.run(run())


@pytest.mark.parametrize("coding,body", ENCODED.values(), ids=ENCODED.keys())
def test_read_body_decodes(coding: str, body: bytes) -> None:
    assert post(body, {"Content-Encoding": coding}) == (200, PAYLOAD)


def test_read_body_streams_chunked_requests() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(GZ), 1000):
            yield GZ[i:i + 1000]
    assert post(chunks, {"Content-Encoding": "gzip"}) == (200, PAYLOAD)


def test_read_body_answers_413_to_a_gzip_bomb() -> None:
    status, answer = post(bomb(50 * MiB), {"Content-Encoding": "gzip"})
    assert status == 413
    assert orjson.loads(answer) == {
        "error": "body is larger than gateway.max_body_bytes (1048576 bytes) once decompressed",
        "limit": "gateway.max_body_bytes",
    }


@pytest.mark.parametrize("headers,words", [
    ({}, "body is larger than gateway.max_body_bytes (1000 bytes)"),
    ({"Content-Encoding": "gzip"}, "compressed body is larger than gateway.max_body_bytes (1000 bytes)"),
], ids=["identity", "gzip"])
def test_read_body_answers_413_from_content_length_before_reading(headers: dict[str, str], words: str) -> None:
    status, answer = post(bytes(5000), headers, "?max=1000")
    assert status == 413
    assert orjson.loads(answer)["error"] == words


def test_read_body_answers_413_to_a_chunked_body_once_it_passes_the_limit() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield bytes(400)
    status, answer = post(chunks, {}, "?max=1000")
    assert status == 413
    assert orjson.loads(answer)["limit"] == "gateway.max_body_bytes"


def test_read_body_answers_400_to_truncated_gzip() -> None:
    status, answer = post(GZ[:-10], {"Content-Encoding": "gzip"})
    assert status == 400
    assert orjson.loads(answer)["error"].startswith("body is not valid gzip: ")


def test_read_body_answers_415_to_an_unknown_coding() -> None:
    status, answer = post(b"{}", {"Content-Encoding": "br"})
    assert status == 415
    assert orjson.loads(answer) == {"error": "unsupported Content-Encoding 'br'; send one of identity, gzip, deflate"}


def test_read_body_refuses_to_run_behind_aiohttp_decompression() -> None:
    status, answer = post(GZ, {"Content-Encoding": "gzip"}, auto_decompress=True)
    assert status == 500
    assert "auto_decompress" in orjson.loads(answer)["error"]


# --- JSON, NDJSON, msgpack --------------------------------------------------------------------------

ROWS = [{"id": 1, "name": "a", "doc": {"k": [1, 2]}}, {"id": 2, "name": None, "ok": True, "score": -1.5}]

ACCEPTED = {
    "json object": (JSON, b'{"id": 1}', [("index 0", {"id": 1})]),
    "json array": (JSON, orjson.dumps(ROWS), [("index 0", ROWS[0]), ("index 1", ROWS[1])]),
    "json, empty body": (JSON, b" \n", []),
    "json, empty array": (JSON, b"[]", []),
    "ndjson, blank lines and crlf": (
        NDJSON, b'\n{"id": 1}\r\n\n  \n{"id": 2}\r\n', [("line 2", {"id": 1}), ("line 5", {"id": 2})],
    ),
    "msgpack map": (MSGPACK, msgpack.packb(ROWS[0]), [("index 0", ROWS[0])]),
    "msgpack array of maps": (MSGPACK, msgpack.packb(ROWS), [("index 0", ROWS[0]), ("index 1", ROWS[1])]),
    "msgpack alias media type": (MSGPACK_ALIAS, msgpack.packb([ROWS[1]]), [("index 0", ROWS[1])]),
    "msgpack bin becomes bytes": (MSGPACK, msgpack.packb({"b": b"\x00\xff"}), [("index 0", {"b": b"\x00\xff"})]),
    "msgpack, empty body": (MSGPACK, b"", []),
    "msgpack, array 16 header": (MSGPACK, msgpack.packb([{"i": i} for i in range(20)]),
                                 [(f"index {i}", {"i": i}) for i in range(20)]),
}


@pytest.mark.parametrize("media_type,body,expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_objects_accepted(media_type: str, body: bytes, expected: list[tuple[str, Any]]) -> None:
    assert rows_of(body, media_type) == expected


def test_media_types_listed() -> None:
    assert MEDIA_TYPES == (JSON, NDJSON, MSGPACK, MSGPACK_ALIAS, CSV)
    with pytest.raises(ValueError, match="csv_table"):
        objects(b"a\n1\n", CSV, LIMITS)


def _ext_row() -> bytes:
    return msgpack.packb({"id": 1, "t": msgpack.ExtType(5, b"x")})


def _timestamp_row() -> bytes:
    return msgpack.packb([{"id": 1}, {"t": [msgpack.Timestamp(1, 0)]}])


# media type, body, limits, exception, status, where, column, words in the message
REFUSED: dict[str, tuple[str, bytes, Limits, type[BodyError], int, str | None, str | None, tuple[str, ...]]] = {
    "json, not an object": (JSON, b'"x"', LIMITS, BodyError, 400, None, None,
                            ("expected an object or an array of objects, got string",)),
    "json array item not an object": (JSON, b'[{"a": 1}, [1]]', LIMITS, BodyError, 400, "index 1", None,
                                      ("expected an object, got array",)),
    "json item null": (JSON, b'[{"a": 1}, null]', LIMITS, BodyError, 400, "index 1", None,
                       ("expected an object, got null",)),
    "json syntax": (JSON, b'[{"a": 1},\n {"a": 2,}]', LIMITS, BodyError, 400, "line 2", None,
                    ("not valid JSON: trailing comma is not allowed",)),
    "json invalid utf-8": (JSON, b'[{"a": 1},\n{"a": "\xff"}]', LIMITS, BodyError, 400, "line 2", None,
                           ("not valid UTF-8: byte 0xff at byte 8",)),
    "json encoded surrogate": (JSON, b'{"a": "\xed\xa0\x80"}', LIMITS, BodyError, 400, "line 1", None,
                               ("not valid UTF-8",)),
    "ndjson item not an object": (NDJSON, b'{"a": 1}\n\n[1, 2]\n', LIMITS, BodyError, 400, "line 3", None,
                                  ("expected an object, got array",)),
    "ndjson item boolean": (NDJSON, b'true', LIMITS, BodyError, 400, "line 1", None,
                            ("expected an object, got boolean",)),
    "ndjson syntax": (NDJSON, b'{"a": 1}\n{"a": }\n', LIMITS, BodyError, 400, "line 2", None, ("not valid JSON",)),
    "ndjson invalid utf-8": (NDJSON, b'{"a": 1}\n{"a": "\xc3("}\n', LIMITS, BodyError, 400, "line 2", None,
                             ("not valid UTF-8: byte 0xc3",)),
    "msgpack, not a map": (MSGPACK, msgpack.packb("x"), LIMITS, BodyError, 400, None, None,
                           ("expected an object or an array of objects, got string",)),
    "msgpack item not a map": (MSGPACK, msgpack.packb([{"a": 1}, [1]]), LIMITS, BodyError, 400, "index 1", None,
                               ("expected an object, got array",)),
    "msgpack item binary": (MSGPACK, msgpack.packb([b"x"]), LIMITS, BodyError, 400, "index 0", None,
                            ("expected an object, got binary",)),
    "msgpack int key": (MSGPACK, msgpack.packb([{"a": 1}, {1: 2}], strict_types=False), LIMITS, BodyError, 400,
                        "index 1", None, ("not valid msgpack", "map key")),
    "msgpack binary key": (MSGPACK, msgpack.packb([{"a": 1}, {b"a": 2}]), LIMITS, BodyError, 400, "index 1", None,
                           ("object keys must be strings, got binary",)),
    "msgpack binary key, nested": (MSGPACK, msgpack.packb({"doc": {b"k": 1}}), LIMITS, BodyError, 400, "index 0",
                                   "doc", ("object keys must be strings, got binary",)),
    "msgpack ext": (MSGPACK, _ext_row(), LIMITS, BodyError, 400, "index 0", "t", ("msgpack ext values",)),
    "msgpack timestamp, nested": (MSGPACK, _timestamp_row(), LIMITS, BodyError, 400, "index 1", "t",
                                  ("msgpack timestamp values",)),
    "msgpack invalid utf-8": (MSGPACK, b"\x92\x81\xa1a\x01\x81\xa1a\xa2\xff\xfe", LIMITS, BodyError, 400, "index 1",
                              None, ("not valid msgpack", "utf-8")),
    "msgpack cut short": (MSGPACK, msgpack.packb(ROWS)[:-3], LIMITS, BodyError, 400, "index 1", None,
                          ("the body ends in the middle of a value",)),
    "msgpack trailing bytes": (MSGPACK, msgpack.packb(ROWS[0]) + b"\x01\x02", LIMITS, BodyError, 400, None, None,
                               ("2 bytes after the end of the value",)),
    "msgpack huge declared top-level array": (MSGPACK, b"\xdd\xff\xff\xff\xff\x80", LIMITS, BodyError, 400,
                                              None, None, ("declares 4294967295 items but only 1 bytes follow",)),
    "msgpack huge declared nested array": (MSGPACK, b"\x81\xa1a\xdd\xff\xff\xff\xff", LIMITS, BodyError, 400,
                                           "index 0", None, ("4294967295 exceeds max_array_len",)),
    "msgpack huge declared map": (MSGPACK, b"\xdf\xff\xff\xff\xff", LIMITS, BodyError, 400, "index 0", None,
                                  ("4294967295 exceeds max_map_len",)),
    "msgpack huge declared string": (MSGPACK, b"\x81\xa1a\xdb\xff\xff\xff\xff", LIMITS, BodyError, 400,
                                     "index 0", None, ("not valid msgpack",)),
}


@pytest.mark.parametrize("media_type,body,lim,kind,status,where,column,words", REFUSED.values(), ids=REFUSED.keys())
def test_objects_refused(media_type: str, body: bytes, lim: Limits, kind: type[BodyError], status: int,
                         where: str | None, column: str | None, words: tuple[str, ...]) -> None:
    with pytest.raises(BodyError) as info:
        rows_of(body, media_type, lim)
    assert_error(info.value, kind, status, where, column, *words)
    assert info.value.as_json()["error"] == str(info.value)


def nested(depth: int) -> Any:
    """A value ``depth`` containers deep: 0 is a scalar; alternates arrays and objects."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def encode(media_type: str, rows: list[dict[str, Any]]) -> bytes:
    if media_type == NDJSON:
        return b"\n".join(orjson.dumps(r) for r in rows)
    if media_type == MSGPACK:
        return msgpack.packb(rows)
    return orjson.dumps(rows)


@pytest.mark.parametrize("media_type", [JSON, NDJSON, MSGPACK])
def test_depth_up_to_the_limit_is_accepted(media_type: str) -> None:
    rows = [{"id": 1, "doc": nested(5)}, {"id": 2, "doc": [nested(4), {"k": nested(3)}]}]
    assert [obj for _, obj in rows_of(encode(media_type, rows), media_type, limits(max_depth=5))] == rows


@pytest.mark.parametrize("media_type,where", [(JSON, "index 2"), (NDJSON, "line 3"), (MSGPACK, "index 2")])
@pytest.mark.parametrize("value", [nested(6), [1, [2, nested(5)]], {"a": 1, "b": [nested(5)]}],
                         ids=["straight", "inside an array", "inside an object"])
def test_depth_over_the_limit_names_row_and_column(media_type: str, where: str, value: Any) -> None:
    rows = [{"id": 1}, {"id": 2, "doc": nested(5)}, {"id": 3, "name": "x", "doc": value}]
    with pytest.raises(LimitError) as info:
        rows_of(encode(media_type, rows), media_type, limits(max_depth=5))
    assert_error(info.value, LimitError, 400, where, "doc", "nests deeper than gateway.max_depth (5)")
    assert info.value.as_json()["limit"] == "gateway.max_depth"


def test_json_nesting_past_orjson_is_a_body_error() -> None:
    with pytest.raises(BodyError, match="not valid JSON"):
        rows_of(b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}", JSON)


STRING_LIMIT = 1000


@pytest.mark.parametrize("media_type,where", [(JSON, "index 1"), (NDJSON, "line 2"), (MSGPACK, "index 1")])
@pytest.mark.parametrize("value,ok", [
    ("x" * STRING_LIMIT, True),
    ("x" * (STRING_LIMIT + 1), False),
    ("é" * (STRING_LIMIT // 2), True),  # 1000 UTF-8 bytes in 500 characters
    ("é" * (STRING_LIMIT // 2 + 1), False),  # 1002 bytes, though only 501 characters
    ("✓" * 334, False),  # 1002 bytes in 334 characters
    (["a", {"k": "x" * (STRING_LIMIT + 1)}], False),  # nested in the column's value
    ({"x" * (STRING_LIMIT + 1): 1}, False),  # a nested key
], ids=["ascii at the limit", "ascii past", "2-byte at the limit", "2-byte past", "3-byte past", "nested", "key"])
@pytest.mark.parametrize("padding", [0, 30], ids=["small body", "body past the limit"])
def test_string_limit_counts_utf8_bytes_and_names_the_column(media_type: str, where: str, value: Any, ok: bool,
                                                            padding: int) -> None:
    # padding: short strings that make the body longer than max_string_bytes, so that no shortcut applies
    rows = [{"id": 0, "pad": ["p" * 100] * padding}, {"id": 1, "text": value}]
    body = encode(media_type, rows)
    assert (len(body) > STRING_LIMIT * 2) == bool(padding)
    lim = limits(max_string_bytes=STRING_LIMIT)
    if ok:
        assert [obj for _, obj in rows_of(body, media_type, lim)] == rows
        return
    with pytest.raises(LimitError) as info:
        rows_of(body, media_type, lim)
    assert_error(info.value, LimitError, 400, where, "text", "gateway.max_string_bytes (1000 bytes)")


@pytest.mark.parametrize("media_type,where", [(JSON, "index 1"), (NDJSON, "line 2"), (MSGPACK, "index 1")])
def test_string_limit_applies_to_column_names(media_type: str, where: str) -> None:
    body = encode(media_type, [{"id": 1}, {"x" * 2000: 1}])
    with pytest.raises(LimitError) as info:
        rows_of(body, media_type, limits(max_string_bytes=STRING_LIMIT))
    assert_error(info.value, LimitError, 400, where, None, "a column name is longer than gateway.max_string_bytes")


def test_msgpack_binary_values_count_against_the_string_limit() -> None:
    body = msgpack.packb([{"id": 1, "blob": b"\x00" * 1001}])
    with pytest.raises(LimitError) as info:
        rows_of(body, MSGPACK, limits(max_string_bytes=STRING_LIMIT))
    assert_error(info.value, LimitError, 400, "index 0", "blob", "gateway.max_string_bytes")


@pytest.mark.parametrize("media_type", [JSON, NDJSON, MSGPACK, CSV])
def test_row_limit(media_type: str) -> None:
    def body(n: int) -> bytes:
        if media_type == CSV:
            return b"id\n" + b"".join(b"%d\n" % i for i in range(n))
        return encode(media_type, [{"id": i} for i in range(n)])

    def count(data: bytes) -> int:
        return len(csv_table(data, lim)[1]) if media_type == CSV else len(rows_of(data, media_type, lim))

    lim = limits(max_rows=10)
    assert count(body(10)) == 10
    with pytest.raises(LimitError) as info:
        count(body(11))
    assert_error(info.value, LimitError, 413, None, None, "more than gateway.max_rows (10) rows")
    assert info.value.as_json() == {"error": "more than gateway.max_rows (10) rows", "limit": "gateway.max_rows"}


def test_msgpack_row_limit_is_checked_from_the_array_header_before_parsing() -> None:
    # The items after the header are garbage: the declared count alone is refused.
    with pytest.raises(LimitError, match="gateway.max_rows"):
        rows_of(b"\xdc\x00\x0b" + b"\xc1" * 11, MSGPACK, limits(max_rows=10))


# --- CSV ---------------------------------------------------------------------------------------------

CSV_ACCEPTED: dict[str, tuple[bytes, tuple[str, ...], list[list[str | None]]]] = {
    "plain": (b"a,b\n1,2\n3,4\n", ("a", "b"), [["1", "2"], ["3", "4"]]),
    "no final newline": (b"a,b\n1,2", ("a", "b"), [["1", "2"]]),
    "header only": (b"a,b\n", ("a", "b"), []),
    "unquoted empty is NULL, quoted empty is the empty string": (
        b'a,b,c\n,"",x\n"",,\n', ("a", "b", "c"), [[None, "", "x"], ["", None, None]],
    ),
    "a lone field": (b'a\n""\n\nx\n', ("a",), [[""], [None], ["x"]]),
    "quotes, commas and newlines inside quotes": (
        b'a,b\n"x, ""y""","line 1\nline 2"\n"",","\n',
        ("a", "b"), [['x, "y"', "line 1\nline 2"], ["", ","]],
    ),
    "crlf line ends, crlf kept inside quotes": (
        b'a,b\r\n1,"p\r\nq"\r\n2,\r\n', ("a", "b"), [["1", "p\r\nq"], ["2", None]],
    ),
    "bom dropped": (b"\xef\xbb\xbfa,b\n1,2\n", ("a", "b"), [["1", "2"]]),
    "quoted header names": (b'"a,1","b""2"\n1,2\n', ("a,1", 'b"2'), [["1", "2"]]),
    "spaces are data": (b'a,b\n 1 , "2" \n', ("a", "b"), [[" 1 ", ' 2 ']]),
    "a quote mid-field opens a quoted section, as in PostgreSQL": (
        b'a,b\nx"y,z"w,v\n', ("a", "b"), [["xy,zw", "v"]],
    ),
    "quoted then unquoted text": (b'a,b\n"ab"c,"x""y"z\n', ("a", "b"), [["abc", 'x"yz']]),
    "four quotes are one quote": (b'a\n""""\n', ("a",), [['"']]),
    "unicode": ("a,b\nünï ✓,\"日本\"\n".encode(), ("a", "b"), [["ünï ✓", "日本"]]),
}


@pytest.mark.parametrize("body,header,rows", CSV_ACCEPTED.values(), ids=CSV_ACCEPTED.keys())
def test_csv_accepted(body: bytes, header: tuple[str, ...], rows: list[list[str | None]]) -> None:
    assert csv_table(body, LIMITS) == (header, rows)


def test_csv_rows_tell_the_line_each_row_starts_on() -> None:
    columns, rows, lines = csv_rows(b'a,b\n1,2\n"x\ny",3\n"p","q\n\nr"\n4,5\n', LIMITS)
    assert (columns, rows) == (("a", "b"), [["1", "2"], ["x\ny", "3"], ["p", "q\n\nr"], ["4", "5"]])
    assert lines == [2, 3, 5, 8]


def test_csv_null_and_empty_are_distinct_values() -> None:
    _, rows = csv_table(b'a,b\n,""\n', LIMITS)
    assert rows[0][0] is None
    assert rows[0][1] == ""


CSV_REFUSED: dict[str, tuple[bytes, Limits, type[BodyError], int, str, str | None, tuple[str, ...]]] = {
    "empty body": (b"", LIMITS, BodyError, 400, "line 1", None, ("expected a header line",)),
    "only a bom": (b"\xef\xbb\xbf", LIMITS, BodyError, 400, "line 1", None, ("expected a header line",)),
    "empty header name": (b"a,,c\n1,2,3\n", LIMITS, BodyError, 400, "line 1", None, ("header field 2 is empty",)),
    "quoted empty header name": (b'a,""\n1,2\n', LIMITS, BodyError, 400, "line 1", None,
                                 ("header field 2 is empty",)),
    "duplicate header name": (b"a,b,a\n1,2,3\n", LIMITS, BodyError, 400, "line 1", "a", ("appears twice",)),
    "too few fields": (b"a,b,c\n1,2,3\n1,2\n", LIMITS, BodyError, 400, "line 3", None, ("expected 3 fields, got 2",)),
    "too many fields": (b"a,b\n1,2,3\n", LIMITS, BodyError, 400, "line 2", None, ("expected 2 fields, got 3",)),
    "a blank line is one NULL field": (b"a,b\n1,2\n\n3,4\n", LIMITS, BodyError, 400, "line 3", None,
                                       ("expected 2 fields, got 1",)),
    "line numbers count lines inside quotes": (b'a,b\n"x\ny\nz",1\n1\n', LIMITS, BodyError, 400, "line 5", None,
                                               ("expected 2 fields, got 1",)),
    "unterminated quote": (b'a,b\n1,2\n3,"four\n5,6\n', LIMITS, BodyError, 400, "line 3", None,
                           ("quoted field is not closed",)),
    "lone carriage return": (b"a,b\n1\r,2\n", LIMITS, BodyError, 400, "line 2", None, ("carriage return",)),
    "lone carriage return, quoted record": (b'a,b\n"1"\r,2\n', LIMITS, BodyError, 400, "line 2", None,
                                            ("carriage return",)),
    "invalid utf-8": (b"a,b\n1,2\n3,\xff\n", LIMITS, BodyError, 400, "line 3", None,
                      ("not valid UTF-8: byte 0xff at byte 3",)),
    "invalid utf-8 after a bom": (b"\xef\xbb\xbfa,\xc3\n", LIMITS, BodyError, 400, "line 1", None,
                                  ("not valid UTF-8",)),
    "string limit, unquoted": (b"a,b\n1," + b"x" * 1001 + b"\n", limits(max_string_bytes=1000), LimitError, 400,
                               "line 2", "b", ("gateway.max_string_bytes (1000 bytes)",)),
    "string limit, quoted utf-8": ('a,b\n1,"'.encode() + "é".encode() * 501 + b'"\n', limits(max_string_bytes=1000),
                                   LimitError, 400, "line 2", "b", ("gateway.max_string_bytes",)),
    "string limit, header": (b"a," + b"x" * 1001 + b"\n", limits(max_string_bytes=1000), LimitError, 400,
                             "line 1", None, ("a column name is longer than gateway.max_string_bytes",)),
}


@pytest.mark.parametrize("body,lim,kind,status,where,column,words", CSV_REFUSED.values(), ids=CSV_REFUSED.keys())
def test_csv_refused(body: bytes, lim: Limits, kind: type[BodyError], status: int, where: str, column: str | None,
                     words: tuple[str, ...]) -> None:
    with pytest.raises(BodyError) as info:
        csv_table(body, lim)
    assert_error(info.value, kind, status, where, column, *words)
    assert info.value.as_json()["line"] == int(where.split()[1])


def test_csv_string_limit_at_the_limit_is_accepted() -> None:
    body = "a\n".encode() + "é".encode() * 500 + b"\n"
    assert csv_table(body, limits(max_string_bytes=1000))[1] == [["é" * 500]]


def test_csv_single_column_blank_line_is_null() -> None:
    assert csv_table(b"a\n1\n\n2\n", LIMITS)[1] == [["1"], [None], ["2"]]


# Bodies PostgreSQL must read exactly as csv_table does (text columns, COPY's csv defaults).
PG_BODIES = [body for body, _, _ in CSV_ACCEPTED.values() if not body.startswith(b"\xef\xbb\xbf")] + [
    b'a,b,c\n,"",""""\n"x""",y"z"w,"multi\nline, with ""quotes"""\n',
    b'a,b\r\n"x\r\ny",\r\n,""\r\n',
]


def test_csv_matches_postgresql_copy(pg_server: str) -> None:
    with psycopg.connect(pg_server) as conn:
        for body in PG_BODIES:
            header, rows = csv_table(body, LIMITS)
            names = sql.SQL(", ").join(map(sql.Identifier, header))
            columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(name)) for name in header)
            conn.execute(sql.SQL("CREATE TEMP TABLE csv_check (n serial, {})").format(columns))
            copy_sql = sql.SQL("COPY csv_check ({}) FROM STDIN (FORMAT csv, HEADER true)").format(names)
            with conn.cursor() as cur:
                with cur.copy(copy_sql) as copy:
                    copy.write(body)
                cur.execute(sql.SQL("SELECT {} FROM csv_check ORDER BY n").format(names))
                assert [list(r) for r in cur.fetchall()] == rows, body
            conn.rollback()


# --- properties ---------------------------------------------------------------------------------------

CSV_TEXT = st.text(alphabet=st.sampled_from(list('ab ,"\r\né✓')), max_size=8)


def write_csv(header: list[str], rows: list[list[str | None]], quote_all: bool, crlf: bool) -> bytes:
    """PostgreSQL's COPY TO csv: NULL unquoted and empty, "" for the empty string, quotes where needed."""
    def field(value: str | None) -> str:
        if value is None:
            return ""
        if quote_all or not value or any(c in value for c in ',"\r\n'):
            return '"' + value.replace('"', '""') + '"'
        return value
    end = "\r\n" if crlf else "\n"
    return "".join(",".join(map(field, line)) + end for line in [header, *rows]).encode()


@given(data=st.data(), width=st.integers(1, 4), quote_all=st.booleans(), crlf=st.booleans())
@settings(max_examples=300, deadline=None)
def test_csv_reads_back_what_a_postgresql_style_writer_wrote(data: st.DataObject, width: int, quote_all: bool,
                                                             crlf: bool) -> None:
    header = data.draw(st.lists(CSV_TEXT.filter(bool), min_size=width, max_size=width, unique=True))
    rows = data.draw(st.lists(st.lists(st.none() | CSV_TEXT, min_size=width, max_size=width), max_size=5))
    assert csv_table(write_csv(header, rows, quote_all, crlf), LIMITS) == (tuple(header), rows)


@given(data=st.binary(max_size=3000), coding=st.sampled_from(["gzip", "deflate-zlib", "deflate-raw"]),
       chunk=st.integers(1, 600))
@settings(max_examples=200, deadline=None)
def test_decoder_round_trips_any_bytes_in_any_chunking(data: bytes, coding: str, chunk: int) -> None:
    body = {"gzip": gzip.compress, "deflate-zlib": zlib.compress, "deflate-raw": raw_deflate}[coding](data)
    assert decode(coding.split("-")[0], body, chunk=chunk) == data


RAW_FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n')), max_size=6)


@given(pairs=st.lists(st.tuples(RAW_FIELD, RAW_FIELD), max_size=4), end=st.sampled_from(["", "\n"]))
@settings(max_examples=300, deadline=None)
def test_csv_agrees_with_postgresql_on_any_text(pg_server: str, pairs: list[tuple[str, str]], end: str) -> None:
    """Stray quotes, commas and newlines: we accept exactly what COPY accepts, with the same values."""
    body = ("a,b\n" + "\n".join(f"{x},{y}" for x, y in pairs) + end).encode()
    try:
        expected: Any = csv_table(body, LIMITS)[1]
    except BodyError:
        expected = BodyError
    with psycopg.connect(pg_server) as conn:
        conn.execute("CREATE TEMP TABLE csv_any (n serial, a text, b text)")
        try:
            with conn.cursor().copy("COPY csv_any (a, b) FROM STDIN (FORMAT csv, HEADER true)") as copy:
                copy.write(body)
        except psycopg.errors.DataError:  # BadCopyFileFormat and friends
            actual: Any = BodyError
        else:
            actual = [list(r) for r in conn.execute("SELECT a, b FROM csv_any ORDER BY n").fetchall()]
    event("refused" if actual is BodyError else f"{len(actual)} rows")
    assert expected == actual, body
