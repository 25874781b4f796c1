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
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgpack
import orjson

from common.wire import Group
from gateway.errors import BodyError, json_type
from gateway.parsing import Table, rows_from_objects, rows_from_text

if TYPE_CHECKING:
    from aiohttp import web

JSON = "application/json"
NDJSON = "application/x-ndjson"
MSGPACK = "application/msgpack"
MSGPACK_ALIAS = "application/x-msgpack"
CSV = "text/csv"
MEDIA_TYPES = (JSON, NDJSON, MSGPACK, MSGPACK_ALIAS, CSV)

ENCODINGS = ("identity", "gzip", "deflate")
_ENCODING_ALIASES = {"": "identity", "x-gzip": "gzip"}

# Bytes asked of the socket per read; decoding output is bounded separately, by max_body_bytes.
READ_CHUNK_BYTES = 64 * 1024

_BOM = b"\xef\xbb\xbf"
# Decimal: JSON numbers read exactly, for tables with numeric columns.
_SCALARS = frozenset({int, float, bool, type(None), Decimal})
@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_rows: int
    max_depth: int
    max_string_bytes: int


class LimitError(BodyError):
    """The body passes one of the gateway's limits: ``limit`` names the config key, ``value`` its setting."""

    def __init__(self, message: str, *, limit: str, value: int, status: int,
                 where: str | None = None, column: str | None = None) -> None:
        self.limit = limit
        self.value = value
        self.status = status
        super().__init__(message, where, column)

    def as_json(self) -> dict[str, Any]:
        return {**super().as_json(), "limit": self.limit}


class UnsupportedEncoding(BodyError):
    """A Content-Encoding the gateway does not decode."""

    status = 415


def status_of(exc: BodyError) -> int:
    """The HTTP status for a body error: 413, 415, or 400 for everything else."""
    return getattr(exc, "status", 400)


def canonical_media_type(media_type: str) -> str:
    return MSGPACK if media_type == MSGPACK_ALIAS else media_type


def _too_large(limit: int, stage: str) -> LimitError:
    """``stage``: "body" (no coding), "compressed" (bytes received) or "decoded" (bytes once inflated)."""
    what = "compressed body" if stage == "compressed" else "body"
    once = " once decompressed" if stage == "decoded" else ""
    return LimitError(f"{what} is larger than gateway.max_body_bytes ({limit} bytes){once}",
                      limit="gateway.max_body_bytes", value=limit, status=413)


def _too_many_rows(limits: Limits) -> LimitError:
    return LimitError(f"more than gateway.max_rows ({limits.max_rows}) rows",
                      limit="gateway.max_rows", value=limits.max_rows, status=413)


def _too_deep(limits: Limits, where: str, column: str) -> LimitError:
    return LimitError(f"column {column!r} nests deeper than gateway.max_depth ({limits.max_depth})",
                      limit="gateway.max_depth", value=limits.max_depth, status=400, where=where, column=column)


def _too_long_error(limits: Limits, where: str, column: str | None) -> LimitError:
    what = f"column {column!r} holds a string" if column is not None else "a column name is"
    return LimitError(f"{what} longer than gateway.max_string_bytes ({limits.max_string_bytes} bytes)",
                      limit="gateway.max_string_bytes", value=limits.max_string_bytes, status=400,
                      where=where, column=column)


def _too_long(value: str | bytes, limit: int) -> bool:
    """Whether a str's UTF-8 (or a bytes') length passes ``limit``; encodes only when it might."""
    n = len(value)
    if n > limit:
        return True  # a str of n characters has at least n UTF-8 bytes
    if type(value) is bytes or n * 4 <= limit:
        return False
    return len(value.encode("utf-8", "surrogatepass")) > limit  # type: ignore[union-attr]


# --- Content-Encoding -------------------------------------------------------------------------


def content_coding(header: str | None) -> str:
    """The one coding a Content-Encoding header names: identity, gzip or deflate; else UnsupportedEncoding."""
    codings = [_ENCODING_ALIASES.get(c, c) for c in (c.strip().lower() for c in (header or "").split(","))]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in ENCODINGS:
        return codings[0]
    raise UnsupportedEncoding(f"unsupported Content-Encoding {header!r}; send one of {', '.join(ENCODINGS)}")


def _is_zlib_header(head: bytes) -> bool:
    """RFC 1950: method 8 (deflate), window <= 32 KiB, and the two header bytes a multiple of 31."""
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class BodyDecoder:
    """Undoes one content coding as chunks arrive, holding at most ``max_body_bytes + 1`` decoded bytes."""

    def __init__(self, coding: str, max_body_bytes: int) -> None:
        if coding not in ENCODINGS:
            raise ValueError(f"unknown coding {coding!r}")
        self.coding = coding
        self.limit = max_body_bytes
        self.received = 0  # bytes as sent
        self.produced = 0  # bytes once decoded
        self._parts: list[bytes] = []
        self._inflater: Any = None  # zlib.Decompress, made once the stream's kind is known
        self._head = b""  # deflate: first bytes, held until the zlib header can be checked

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise _too_large(self.limit, "body" if self.coding == "identity" else "compressed")
        if self.coding == "identity":
            self._keep(chunk)
            return
        if self._inflater is None:
            if self.coding == "gzip":
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                self._head += chunk
                if len(self._head) < 2:
                    return
                chunk, self._head = self._head, b""
                self._inflater = zlib.decompressobj(zlib.MAX_WBITS if _is_zlib_header(chunk) else -zlib.MAX_WBITS)
        self._inflate(chunk)

    def finish(self) -> bytes:
        """The whole decoded body; BodyError if the compressed stream stopped short."""
        if self.coding != "identity":
            if self._inflater is None and self._head:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # one byte cannot be a zlib header
                self._inflate(self._head)
            if self._inflater is None or not self._inflater.eof:
                raise BodyError(f"body is not valid {self.coding}: the stream ends before the compressed data does")
        return b"".join(self._parts)

    def _inflate(self, data: bytes) -> None:
        inflater = self._inflater
        while data:
            if inflater.eof:  # input left after the end of a stream
                if self.coding != "gzip":
                    raise BodyError(f"body is not valid deflate: {len(data)} bytes after the end of the stream")
                inflater = self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next gzip member
            try:
                # One byte past the limit is enough to know the limit is passed: never inflate more.
                self._keep(inflater.decompress(data, self.limit - self.produced + 1))
            except zlib.error as exc:
                raise BodyError(f"body is not valid {self.coding}: {exc}") from exc
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def _keep(self, out: bytes) -> None:
        self.produced += len(out)
        if self.produced > self.limit:
            raise _too_large(self.limit, "body" if self.coding == "identity" else "decoded")
        if out:
            self._parts.append(out)


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The request's body with its Content-Encoding undone, within ``limits.max_body_bytes`` both ways."""
    coding = content_coding(request.headers.get("Content-Encoding"))
    if getattr(request.content, "total_compressed_bytes", None) is not None:
        # aiohttp inflated the body already, with no limit of ours: a wiring mistake, not a client's.
        raise RuntimeError("aiohttp decoded the request body itself; serve the app with "
                           "handler_args={'auto_decompress': False}")
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise _too_large(limits.max_body_bytes, "body" if coding == "identity" else "compressed")
    decoder = BodyDecoder(coding, limits.max_body_bytes)
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        decoder.feed(chunk)
    return decoder.finish()


# --- objects: JSON, NDJSON, msgpack -------------------------------------------------------------


def parse_body(body: bytes, media_type: str, table: Table, limits: Limits) -> tuple[Group, ...]:
    """A request body to checked groups of rows for ``table`` (BodyError naming where, if not)."""
    media_type = canonical_media_type(media_type)
    if media_type == CSV:
        columns, rows, lines = csv_rows(body, limits)
        return rows_from_text(columns, rows, [f"line {n}" for n in lines], table, check_nul=b"\x00" in body)
    # A NUL can only be in a JSON string as the escape \u0000; in msgpack it is a raw byte.
    check_nul = (b"\\u0000" in body) if media_type in (JSON, NDJSON) else (b"\x00" in body)
    return rows_from_objects(objects(body, media_type, limits, table.exact_numbers), table, check_nul)


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
        return BodyError(f"not valid UTF-8: byte 0x{data[bad.start]:02x} at column {column}", f"line {line}")
    return BodyError(f"not valid JSON: {exc.msg} at column {exc.colno}", f"line {first_line + exc.lineno - 1}")


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _exact_loads(data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("not valid UTF-8", "", 0) from exc
    return json.loads(text, parse_float=Decimal, parse_constant=_no_constants)


def _json_objects(body: bytes, limits: Limits, loads: Callable[[bytes], Any]) -> Iterator[tuple[str, Any]]:
    if not body.strip():
        return  # an empty body holds no rows, as an empty NDJSON body does (not "invalid JSON")
    try:
        doc = loads(body)
    except json.JSONDecodeError as exc:
        raise _decode_error(body, exc, 1) from exc
    if isinstance(doc, dict):
        items: list[Any] = [doc]
    elif isinstance(doc, list):
        items = doc
        if len(items) > limits.max_rows:
            raise _too_many_rows(limits)
    else:
        raise BodyError(f"expected an object or an array of objects, got {json_type(doc)}")
    long_strings = len(body) > limits.max_string_bytes
    check = _RowCheck(limits, msgpack_types=False)
    for i, obj in enumerate(items):
        where = f"index {i}"
        if type(obj) is not dict:
            raise BodyError(f"expected an object, got {json_type(obj)}", where)
        check(obj, where, long_strings)
        yield where, obj


def _ndjson_objects(body: bytes, limits: Limits, loads: Callable[[bytes], Any]) -> Iterator[tuple[str, Any]]:
    check = _RowCheck(limits, msgpack_types=False)
    rows = 0
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line or line.isspace():
            continue
        rows += 1
        if rows > limits.max_rows:
            raise _too_many_rows(limits)
        try:
            obj = loads(line)
        except json.JSONDecodeError as exc:
            raise _decode_error(line, exc, number) from exc
        where = f"line {number}"
        if type(obj) is not dict:
            raise BodyError(f"expected an object, got {json_type(obj)}", where)
        check(obj, where, len(line) > limits.max_string_bytes)
        yield where, obj


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
            raise _too_many_rows(limits)
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
                if len(value) > threshold and _too_long(value, limits.max_string_bytes):
                    raise _too_long_error(limits, where, column)
            elif kind is dict or kind is list:
                _check_nested(value, column, where, limits, threshold)
            elif kind not in _SCALARS:
                raise BodyError(f"column {column!r}: msgpack {json_type(value)} values are not accepted", where, column)

    def _check_keys(self, keys: Any, where: str, threshold: int) -> None:
        for key in keys:
            if type(key) is not str:
                raise BodyError(f"object keys must be strings, got {json_type(key)}", where)
            if len(key) > threshold and _too_long(key, self.limits.max_string_bytes):
                raise _too_long_error(self.limits, where, None)


def _check_nested(value: dict[Any, Any] | list[Any], column: str, where: str, limits: Limits, threshold: int) -> None:
    """Walk one column value without recursion, so any max_depth is safe for the interpreter's stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise _too_deep(limits, where, column)
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    raise BodyError(f"column {column!r}: object keys must be strings, got {json_type(key)}",
                                    where, column)
                if len(key) > threshold and _too_long(key, limits.max_string_bytes):
                    raise _too_long_error(limits, where, column)
            children = node.values()
        else:
            children = node
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
            elif kind is str or kind is bytes:
                if len(child) > threshold and _too_long(child, limits.max_string_bytes):
                    raise _too_long_error(limits, where, column)
            elif kind not in _SCALARS:
                raise BodyError(f"column {column!r}: msgpack {json_type(child)} values are not accepted",
                                where, column)


# --- CSV ------------------------------------------------------------------------------------------


def csv_table(body: bytes, limits: Limits) -> tuple[tuple[str, ...], list[list[str | None]]]:
    """The header and rows of a CSV body, read as PostgreSQL's ``COPY ... (FORMAT csv)`` would read them."""
    columns, rows, _ = csv_rows(body, limits)
    return columns, rows


def csv_rows(body: bytes, limits: Limits) -> tuple[tuple[str, ...], list[list[str | None]], list[int]]:
    """:func:`csv_table`, plus the line each row starts on (for ``line N`` in later errors).

    Records are found by counting quotes: PostgreSQL toggles "in quotes" at every quote character
    (a doubled quote toggles twice), so a line ends its record exactly when the record so far holds
    an even number of quotes. Lines without a quote, the common case, are split with ``str.split``.
    """
    skip = len(_BOM) if body.startswith(_BOM) else 0
    try:
        text = str(memoryview(body)[skip:], "utf-8")
    except UnicodeDecodeError as bad:
        at = skip + bad.start
        line, column = body.count(b"\n", 0, at) + 1, at - body.rfind(b"\n", 0, at)
        raise BodyError(f"not valid UTF-8: byte 0x{body[at]:02x} at column {column}", f"line {line}") from bad
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's ending, not an empty record
    if not lines:
        raise BodyError("expected a header line naming the columns, got an empty body", "line 1")
    count = len(lines)
    header_line, next_line = _record(lines, 0)
    header = _fields(header_line, 1, limits, None)
    names: set[str] = set()
    for i, name in enumerate(header, start=1):
        if not name:
            raise BodyError(f"header field {i} is empty; every column needs a name", "line 1")
        if name in names:
            raise BodyError(f"column {name!r} appears twice in the header", "line 1", name)
        names.add(name)
    columns = tuple(name for name in header if name is not None)
    width = len(columns)
    rows: list[list[str | None]] = []
    starts: list[int] = []
    index = next_line
    while index < count:
        start = index
        line = lines[index]
        index += 1
        if '"' in line:
            line, index = _record(lines, start)
            row = _fields(line, start + 1, limits, columns)
        else:
            if line[-1:] == "\r":
                line = line[:-1]
            if "\r" in line:
                raise _stray_cr(start + 1)
            row = [field or None for field in line.split(",")]
            if len(line) * 4 > limits.max_string_bytes:  # else no field can pass the limit
                _check_fields(row, start + 1, limits, columns)
        if len(row) != width:
            raise BodyError(f"expected {width} fields, got {len(row)}", f"line {start + 1}")
        rows.append(row)
        starts.append(start + 1)
        if len(rows) > limits.max_rows:
            raise _too_many_rows(limits)
    return columns, rows, starts


def _stray_cr(number: int) -> BodyError:
    return BodyError("carriage return outside quotes; end lines with LF or CRLF, and quote values that hold CR",
                     f"line {number}")


def _record(lines: list[str], start: int) -> tuple[str, int]:
    """The record starting at ``lines[start]`` (joined with the lines its quotes span) and the next index."""
    record = lines[start]
    index = start + 1
    quotes = record.count('"')
    if quotes & 1:
        parts = [record]
        while quotes & 1:
            if index == len(lines):
                raise BodyError("a quoted field is not closed before the end of the body", f"line {start + 1}")
            parts.append(lines[index])
            quotes += lines[index].count('"')
            index += 1
        record = "\n".join(parts)
    if record[-1:] == "\r":
        record = record[:-1]
    return record, index


def _fields(record: str, number: int, limits: Limits, columns: tuple[str, ...] | None) -> list[str | None]:
    """Split one record (an even number of quotes) into fields, with PostgreSQL's NULL rule."""
    parts = record.split('"')
    # Even-numbered parts lie outside quotes, odd-numbered ones inside. An empty part outside quotes
    # between two inside ones is a doubled quote within a quoted section: one literal quote.
    last = len(parts) - 1
    fields: list[str | None] = []
    current: list[str] = []
    quoted = False
    for i, part in enumerate(parts):
        if i & 1:
            current.append(part)
            quoted = True
        elif not part:
            if 0 < i < last:
                current.append('"')
        else:
            if "\r" in part:
                raise _stray_cr(number)
            pieces = part.split(",")
            current.append(pieces[0])
            for piece in pieces[1:]:
                fields.append("".join(current) if quoted or any(current) else None)
                current = [piece]
                quoted = False
    fields.append("".join(current) if quoted or any(current) else None)
    if len(record) * 4 > limits.max_string_bytes:  # else no field can pass the limit
        _check_fields(fields, number, limits, columns)
    return fields


def _check_fields(row: list[str | None], number: int, limits: Limits, columns: tuple[str, ...] | None) -> None:
    for i, value in enumerate(row):
        if value is not None and _too_long(value, limits.max_string_bytes):
            column = columns[i] if columns is not None and i < len(columns) else None
            raise _too_long_error(limits, f"line {number}", column)
