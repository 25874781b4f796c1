"""Request bodies to row objects: what the gateway accepts, and the limits it holds bodies to.

Pure functions, except :func:`read_body`, the one coroutine that reads an aiohttp request.

Content-Encoding (:func:`read_body`)
    ``identity`` (or no header), ``gzip`` (alias ``x-gzip``; several members back to back are one
    body, as RFC 1952 allows) and ``deflate``, either zlib-wrapped as RFC 9110 says or raw, as some
    clients send it; the two are told apart by the zlib header. One coding per request. Any other
    coding is refused with :class:`UnsupportedEncoding` (415). The body is decoded as it arrives and
    reading stops with :class:`LimitError` (413) as soon as either the bytes received or the bytes
    decoded pass ``max_body_bytes``: a compressed bomb never holds more than ``max_body_bytes + 1``
    decoded bytes. A stream that is corrupt or ends early is a :class:`BodyError` (400),
    ``body is not valid gzip: ...``. The server must not decode bodies itself
    (``handler_args={"auto_decompress": False}``); :func:`read_body` raises RuntimeError if it did.

Media types (:func:`objects`, :func:`csv_table` / :func:`csv_rows`)
    ``application/json``
        One object, or an array of objects. Items are ``index N`` (0-based).
    ``application/x-ndjson``
        One object per line, ``\\n`` or ``\\r\\n``; blank lines are skipped. Items are ``line N`` (1-based).
    ``application/msgpack`` (alias ``application/x-msgpack``)
        One map, or an array of maps; items are ``index N``. Map keys must be strings. bin values
        become bytes; ext values (timestamps included) are refused. Containers may not declare more
        items than the body has bytes, so a lying header cannot allocate.
    ``text/csv``
        Read as PostgreSQL's ``COPY ... (FORMAT csv)`` reads with its defaults, so a value means what it
        would mean to PostgreSQL: the first line is the header (column names, non-empty and
        unique); comma delimiter; ``"`` quotes, and ``""`` inside quotes is one quote; a quote anywhere
        in a field opens a quoted section (``a"b,c"d`` is ``ab,cd``); an unquoted empty field is NULL,
        a quoted one (``""``) the empty string; quoted fields may hold commas, quotes, CR and LF.
        Lines end with LF or CRLF (a body may mix them, which COPY would not accept); a CR elsewhere
        must be quoted. A UTF-8 BOM is dropped. Every line, blank ones included, is a row and must
        have as many fields as the header (a blank line is one NULL field; only the final line ending
        is not a row). Values are str or None; PostgreSQL casts the text. Rows are ``line N``: the
        physical line the record starts on, the header being 1.

    Every body must be valid UTF-8 (msgpack: every str). Errors in a parsed item name the item
    (``index N`` / ``line N``) and, when a value is at fault, its column; a JSON body that does
    not parse names the line in the body instead. :func:`status_of` gives an error's HTTP status.

Limits (:class:`Limits`, from the ``gateway`` config section)
    ``max_body_bytes``   bytes received, and bytes once decoded                  413
    ``max_rows``         objects (JSON, NDJSON, msgpack) or CSV rows per body   413
    ``max_depth``        objects/arrays nested in one column value: ``1`` and
                         ``"a"`` are 0 deep, ``[1]`` is 1, ``{"a": [1]}`` is 2    400
    ``max_string_bytes`` UTF-8 bytes of any string, key or binary value          400

    Checks stay cheap: only object and array values are walked, strings are measured only when
    they could pass the limit, and a row whose whole text is shorter than the limit is not
    searched for long strings at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import msgpack
import orjson

from common.wire import Group
from gateway.catalog import Table
from gateway.csvbody import UTF8_BOM, csv_rows, csv_table
from gateway.encoding import ENCODINGS, BodyDecoder, content_coding, read_body
from gateway.errors import BodyError, json_type
from gateway.limits import (
    LimitError,
    Limits,
    UnsupportedEncoding,
    status_of,
    too_deep,
    too_long,
    too_long_error,
    too_many_rows,
)
from gateway.parsing import rows_from_objects, rows_from_text

__all__ = ["CSV", "ENCODINGS", "JSON", "MEDIA_TYPES", "MSGPACK", "NDJSON", "BodyDecoder", "LimitError", "Limits",
           "UnsupportedEncoding", "canonical_media_type", "content_coding", "csv_rows", "csv_table", "objects",
           "parse_body", "read_body", "status_of"]

JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
MSGPACK_ALIAS = "application/x-msgpack"
CSV = "text/csv"
MEDIA_TYPES = (JSON, NDJSON, MSGPACK, MSGPACK_ALIAS, CSV)

# Decimal: JSON numbers read exactly, for tables with numeric columns.
_SCALARS = frozenset({int, float, bool, type(None), Decimal})


def canonical_media_type(media_type: str) -> str:
    return MSGPACK if media_type == MSGPACK_ALIAS else media_type


def parse_body(body: bytes, media_type: str, table: Table, limits: Limits) -> tuple[Group, ...]:
    """A request body to checked groups of rows for ``table`` (BodyError naming where, if not)."""
    media_type = canonical_media_type(media_type)
    if media_type == CSV:
        columns, rows, lines = csv_rows(body, limits)
        return rows_from_text(columns, rows, [f"line {n}" for n in lines], table, check_nul=b"\x00" in body)
    if media_type in (JSON, NDJSON) and body.startswith(UTF8_BOM):
        body = body[len(UTF8_BOM):]  # skipped as csv_rows skips it
    # A NUL can only be in a JSON string as the escape \u0000; in msgpack it is a raw byte.
    # JSON text cannot spell NaN or infinity (both parsers refuse them); msgpack floats can be either.
    text = media_type in (JSON, NDJSON)
    check_nul = (b"\\u0000" in body) if text else (b"\x00" in body)
    return rows_from_objects(objects(body, media_type, limits, table.exact_numbers), table, check_nul,
                             check_finite=not text)


def objects(body: bytes, media_type: str, limits: Limits, exact_numbers: bool = False) -> Iterator[tuple[str, Any]]:
    """``(where, object)`` for each row object of a JSON, NDJSON or msgpack body, checked against ``limits``.

    ``exact_numbers``: read JSON numbers exactly (big integers as int, decimals as Decimal) with the
    standard library's parser, for tables with numeric columns; otherwise orjson (faster, 64-bit).
    """
    media_type = canonical_media_type(media_type)
    loads = _exact_loads if exact_numbers else orjson.loads
    if media_type == JSON:
        return _json_objects(body, limits, loads)
    if media_type == NDJSON:
        return _ndjson_objects(body, limits, loads)
    if media_type == MSGPACK:
        return _msgpack_objects(body, limits)
    raise ValueError(f"objects() does not read {media_type!r}; CSV bodies go through csv_table()")


def _decode_error(data: bytes, exc: json.JSONDecodeError, first_line: int) -> BodyError:
    """Where JSON text went wrong: orjson reports invalid UTF-8 at position 0, so find the byte ourselves."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = first_line + data.count(b"\n", 0, bad.start)
        column = bad.start - data.rfind(b"\n", 0, bad.start)
        return BodyError(f"not valid UTF-8: byte 0x{data[bad.start]:02x} at byte {column}", f"line {line}")
    return BodyError(f"not valid JSON: {exc.msg} at character {exc.colno}", f"line {first_line + exc.lineno - 1}")


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _exact_loads(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("not valid UTF-8", "", 0) from exc
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)
    except json.JSONDecodeError:
        raise
    except RecursionError as exc:  # deeper than the parser's stack: the depth limit would refuse it anyway
        raise json.JSONDecodeError("nested too deeply", text, 0) from exc
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise json.JSONDecodeError(str(exc), text, 0) from exc


def _json_objects(body: bytes, limits: Limits, loads: Callable[[bytes], Any]) -> Iterator[tuple[str, Any]]:
    if not body.strip():
        return iter(())  # an empty body holds no rows, as an empty NDJSON body does (not "invalid JSON")
    try:
        doc = loads(body)
    except json.JSONDecodeError as exc:
        raise _decode_error(body, exc, 1) from exc
    if isinstance(doc, dict):
        items: list[Any] = [doc]
    elif isinstance(doc, list):
        items = doc
        if len(items) > limits.max_rows:
            raise too_many_rows(limits)
    else:
        raise BodyError(f"expected an object or an array of objects, got {json_type(doc)}")
    wheres = [f"index {i}" for i in range(len(items))]
    if not set(map(type, items)) <= {dict}:
        i = next(i for i, obj in enumerate(items) if type(obj) is not dict)
        raise BodyError(f"expected an object, got {json_type(items[i])}", wheres[i])
    # Flat rows (one "{" per object, no "[" but the outer one) and a short body: no limit can be passed.
    long_strings = len(body) > limits.max_string_bytes
    flat = body.count(b"{") == len(items) and body.count(b"[") == (0 if isinstance(doc, dict) else 1)
    if long_strings or not flat:
        check = _RowCheck(limits, msgpack_types=False)
        for where, obj in zip(wheres, items, strict=True):
            check(obj, where, long_strings)
    return zip(wheres, items, strict=True)


def _ndjson_objects(body: bytes, limits: Limits, loads: Callable[[bytes], Any]) -> Iterator[tuple[str, Any]]:
    numbered = [(number, line) for number, line in enumerate(body.split(b"\n"), start=1)
                if line and not line.isspace()]
    if len(numbered) > limits.max_rows:
        raise too_many_rows(limits)
    try:
        # Every line parsed by one C-level map; only a line that fails is looked at again, to name it.
        objs = list(map(loads, [line for _, line in numbered]))
    except json.JSONDecodeError:
        objs = [_ndjson_line(number, line, loads) for number, line in numbered]
    wheres = [f"line {number}" for number, _ in numbered]
    for where, obj in zip(wheres, objs, strict=True):
        if type(obj) is not dict:
            raise BodyError(f"expected an object, got {json_type(obj)}", where)
    # Flat rows (one "{" a line, no "[") and a short body: no limit can be passed, nothing to check.
    if len(body) > limits.max_string_bytes or b"[" in body or body.count(b"{") != len(objs):
        check = _RowCheck(limits, msgpack_types=False)
        for (_, line), where, obj in zip(numbered, wheres, objs, strict=True):
            long_strings = len(line) > limits.max_string_bytes
            if long_strings or b"[" in line or line.count(b"{") > 1:
                check(obj, where, long_strings)
    return zip(wheres, objs, strict=True)


def _ndjson_line(number: int, line: bytes, loads: Callable[[bytes], Any]) -> Any:
    try:
        return loads(line)
    except json.JSONDecodeError as exc:
        raise _decode_error(line, exc, number) from exc


def _msgpack_reason(exc: Exception) -> str:
    if isinstance(exc, msgpack.OutOfData):
        return "the body ends in the middle of a value"
    return str(exc) or type(exc).__name__


def _msgpack_objects(body: bytes, limits: Limits) -> Iterator[tuple[str, Any]]:
    size = len(body)
    if not size:
        return
    # No container may declare more items than the body has bytes (each item takes at least one),
    # so a hostile length prefix cannot make msgpack allocate; strings are bounded by the body too,
    # and measured against max_string_bytes afterwards, so that the error can name the column.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=size, max_str_len=size,
                                max_bin_len=size, max_array_len=size, max_map_len=size // 2, max_ext_len=size)
    unpacker.feed(body)
    check = _RowCheck(limits, msgpack_types=True)
    is_array = 0x90 <= body[0] <= 0x9F or body[0] in (0xDC, 0xDD)  # fixarray, array 16, array 32
    if is_array:
        try:
            count = unpacker.read_array_header()
        except (ValueError, msgpack.UnpackException) as exc:
            raise BodyError(f"not valid msgpack: {_msgpack_reason(exc)}") from exc
        if count > size - unpacker.tell():
            raise BodyError(f"not valid msgpack: the array declares {count} items "
                            f"but only {size - unpacker.tell()} bytes follow")
        if count > limits.max_rows:
            raise too_many_rows(limits)
    else:
        count = 1
    for i in range(count):
        where = f"index {i}"
        start = unpacker.tell()
        try:
            obj = unpacker.unpack()
        except (ValueError, msgpack.UnpackException) as exc:
            raise BodyError(f"not valid msgpack: {_msgpack_reason(exc)}", where) from exc
        if type(obj) is not dict:
            if not is_array:
                raise BodyError(f"expected an object or an array of objects, got {json_type(obj)}")
            raise BodyError(f"expected an object, got {json_type(obj)}", where)
        check(obj, where, unpacker.tell() - start > limits.max_string_bytes)
        yield where, obj
    if unpacker.tell() != size:
        raise BodyError(f"not valid msgpack: {size - unpacker.tell()} bytes after the end of the value")


class _RowCheck:
    """Depth and string limits for the row objects of one body; for msgpack, also str keys and no ext values.

    Cheap for the common row: one pass over its values that looks at each value's type and, for
    strings, compares the length with a quarter of max_string_bytes (a UTF-8 character has at most
    4 bytes), encoding only longer strings. Only object and array values are walked further.
    msgpack keys are type-checked once per distinct key set.
    """

    def __init__(self, limits: Limits, msgpack_types: bool) -> None:
        self.limits = limits
        self.msgpack_types = msgpack_types
        self._quarter = limits.max_string_bytes // 4
        self._last_keys: Any = None

    def __call__(self, row: dict[Any, Any], where: str, long_strings: bool) -> None:
        """``long_strings`` is False when the row's encoded form is within max_string_bytes: no string can pass."""
        threshold = self._quarter if long_strings else sys.maxsize
        if self.msgpack_types or long_strings:
            keys = row.keys()
            if keys != self._last_keys:  # equal key sets hold the same, already checked, keys
                self._check_keys(keys, where, threshold)
                self._last_keys = keys
        for value in row.values():  # the fast pass: scalars and short strings need nothing more
            kind = type(value)
            if kind in _SCALARS or ((kind is str or kind is bytes) and len(value) <= threshold):
                continue
            break
        else:
            return
        limits = self.limits
        for column, value in row.items():
            kind = type(value)
            if kind is str or kind is bytes:
                if len(value) > threshold and too_long(value, limits.max_string_bytes):
                    raise too_long_error(limits, where, column)
            elif kind is dict or kind is list:
                _check_nested(value, column, where, limits, threshold)
            elif kind not in _SCALARS:
                raise BodyError(f"column {column!r}: msgpack {json_type(value)} values are not accepted", where, column)

    def _check_keys(self, keys: Any, where: str, threshold: int) -> None:
        for key in keys:
            if type(key) is not str:
                raise BodyError(f"object keys must be strings, got {json_type(key)}", where)
            if len(key) > threshold and too_long(key, self.limits.max_string_bytes):
                raise too_long_error(self.limits, where, None)


def _check_nested(value: dict[Any, Any] | list[Any], column: str, where: str, limits: Limits, threshold: int) -> None:
    """Walk one column value without recursion, so any max_depth is safe for the interpreter's stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise too_deep(limits, where, column)
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    raise BodyError(f"column {column!r}: object keys must be strings, got {json_type(key)}",
                                    where, column)
                if len(key) > threshold and too_long(key, limits.max_string_bytes):
                    raise too_long_error(limits, where, column)
            children = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is str or kind is bytes:
                if len(child) > threshold and too_long(child, limits.max_string_bytes):
                    raise too_long_error(limits, where, column)
            elif kind not in _SCALARS:
                raise BodyError(f"column {column!r}: msgpack {json_type(child)} values are not accepted",
                                where, column)


