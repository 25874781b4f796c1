"""Checks rows against their table's columns before a job is created: pure, no I/O.

A value is accepted when PostgreSQL will store exactly it, and refused (400,
naming the row and the column) when it cannot be the column's type:

========================  ==========================================================
column type               accepted JSON / msgpack values
========================  ==========================================================
smallint, integer, bigint integers within the type's range (or their text, "42")
real, double precision    numbers; numeric strings, also "NaN", "Infinity", "-Infinity"
numeric                   numbers; numeric strings (exact: "12345678901234567890.5")
boolean                   true / false (or PostgreSQL's words: "t", "false", "yes", ...)
text, varchar(n), char(n) strings (at most n characters), without NUL
uuid                      strings in any form PostgreSQL reads as a uuid
date                      ISO 8601 dates "2013-01-31"; "infinity", "-infinity"
timestamp, timestamptz    ISO 8601 date-times YYYY-MM-DD[Thh:mm[:ss[.ffffff]]], "T" or
                          space, optional offset (+hh[:mm[:ss]], +hhmm) or "Z";
                          a timestamptz value without an offset is UTC
time, timetz              ISO 8601 times
json, jsonb               any JSON value (jsonb: no NUL in strings)
arrays (type[])           arrays (nested for more dimensions) of the element type
anything else             strings, numbers or booleans; PostgreSQL itself decides (a
                          value it refuses goes to the dead-letter table with its reason)
========================  ==========================================================

null is accepted where the column is nullable. A column that is NOT NULL and
has no default must be named by every row; generated columns cannot be written.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from operator import attrgetter
from typing import Any

from gateway.catalog import Column, Table
from gateway.errors import BodyError, json_type

INT_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
FLOAT_TYPES = frozenset({"real", "double precision"})
FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity", "nan", "inf", "-inf", "infinity", "-infinity"})
TEXT_TYPES = frozenset({"text", "character varying", "character", "varchar", "char", "bpchar", "name", "citext"})
TIMESTAMP_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})
TIME_TYPES = frozenset({"time with time zone", "time without time zone"})
JSON_TYPES = frozenset({"json", "jsonb"})
INFINITIES = frozenset({"infinity", "-infinity"})

# PostgreSQL arrays have at most 6 dimensions (MAXDIM).
MAX_ARRAY_DIMS = 6

_TYPMOD = re.compile(r"\(([^)]*)\)")

# A check takes one non-null value and returns why it is refused, or None.
Check = Callable[[Any], str | None]


@functools.cache  # a table has few distinct types; this runs for every column of every request
def base_type(data_type: str) -> tuple[str, int | None, int]:
    """'character varying(20)[]' -> ('character varying', 20, 1): name, length limit, array dimensions."""
    dims = 0
    while data_type.endswith("[]"):
        data_type, dims = data_type[:-2], dims + 1
    m = _TYPMOD.search(data_type)
    limit = None
    if m:
        first = m.group(1).split(",")[0].strip()
        limit = int(first) if first.isdigit() else None
        data_type = (data_type[: m.start()] + data_type[m.end():]).strip()
    return data_type, limit, dims


# Strings PostgreSQL reads as the type: accepted too (CSV rows and dead letters hold text).
# ASCII digits only ([0-9], not \d: Python's int() reads other scripts' digits, PostgreSQL does not),
# no underscores (PostgreSQL 16 reads "1_000", 15 does not). Around the value, only the white space
# PostgreSQL skips (C's isspace), not \s: that also matches U+001C-U+001F and U+00A0, which
# PostgreSQL refuses and Python's int() and float() do too.
PG_SPACE = " \t\n\v\f\r"
_WS = "[ \t\n\v\f\r]*"
_INT_TEXT = re.compile(rf"{_WS}[+-]?[0-9]+{_WS}")
_DECIMAL = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_FLOAT_TEXT = re.compile(rf"{_WS}(?:{_DECIMAL}|nan|[+-]?inf(?:inity)?){_WS}", re.IGNORECASE)
_NUMERIC_TEXT = _FLOAT_TEXT  # numeric reads the same words (NaN, Infinity since PostgreSQL 14)
# numeric holds up to 131072 digits before the decimal point ...
NUMERIC_MAX_ADJUSTED = 131071
# ... and up to 16383 after it.
NUMERIC_MAX_SCALE = 16383
# real is a 4-byte float: a value that rounds to infinity there is out of range. Its largest value is
# 3.4028234663852886e38, which PostgreSQL prints as 3.4028235e38; a double rounds to it when below the
# halfway point to the next power of two (at the halfway point, ties to even round to infinity).
REAL_LIMIT = (2 - 2**-24) * 2.0**127
REAL_MIN_NORMAL = 1.1754943508222875e-38
_BOOL_TEXT = frozenset({"t", "f", "true", "false", "yes", "no", "on", "off", "1", "0", "y", "n"})


def _int_check(lo: int, hi: int, name: str) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is str and _INT_TEXT.fullmatch(v):
            v = int(v)
        if type(v) is int:
            return None if lo <= v <= hi else f"{v} is out of range for {name}"
        if type(v) is float and v.is_integer():
            if abs(v) >= 2**63:  # orjson reads an integer past 64 bits as a float
                return f"an integer of about {v:.3g} is out of range for {name}"
            return f"expected an integer, got {v!r}"
        if type(v) is str:
            return f"expected an integer, got the string {v[:40]!r}"
        return f"expected an integer, got {got(v)}"
    return check


def _float_check(name: str) -> Check:
    """real or double precision: what PostgreSQL's float input takes, and refuses as out of range
    (a finite value too large for the type, or a non-zero one that would round to zero)."""
    largest = REAL_LIMIT if name == "real" else math.inf

    def check(v: Any) -> str | None:
        if type(v) is float:
            return None if not math.isfinite(v) else in_range(v, v != 0.0, v)
        if type(v) is str:
            if not _FLOAT_TEXT.fullmatch(v):
                return f"expected a number, got the string {v[:40]!r}"
            text = v.strip(PG_SPACE).lower()
            if text.lstrip("+-") in ("nan", "inf", "infinity"):
                return None
            nonzero = any(c in "123456789" for c in text.split("e")[0])
        elif type(v) is int or type(v) is Decimal:
            nonzero = v != 0
        else:
            return f"expected a number, got {got(v)}"
        try:
            f = float(v)
        except OverflowError:  # an int too large for any float
            f = math.inf
        return in_range(f, nonzero, v)

    def in_range(f: float, nonzero: bool, v: Any) -> str | None:
        if not abs(f) < largest:
            return f"{got(v)} is out of range for {name}"
        if nonzero and (f == 0.0 or (name == "real" and struct.unpack("f", struct.pack("f", f))[0] == 0.0)):
            return f"{got(v)} is out of range for {name} (too close to zero)"
        return None
    return check


def _numeric_check(v: Any) -> str | None:
    if type(v) is int:
        return None
    if type(v) is float:
        return None if math.isfinite(v) else "numeric takes NaN only as the string \"NaN\""
    if type(v) is str:
        if not _NUMERIC_TEXT.fullmatch(v):
            return f"{v[:40]!r} is not a number"
        v = Decimal(v.strip(PG_SPACE))
    if type(v) is Decimal:
        if v.is_finite() and (v.adjusted() > NUMERIC_MAX_ADJUSTED or v.as_tuple().exponent < -NUMERIC_MAX_SCALE):
            return f"{got(v)} is out of range for numeric"
        return None
    return f"expected a number, got {got(v)}"


def utf8_ok(text: str) -> bool:
    """UTF-8 can hold the text: no lone surrogate (only JSON's \\uD800-\\uDFFF escapes can make one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def got(v: Any) -> str:
    """A refused value as an error message shows it: its JSON type, and the value when it is short text or a number."""
    if type(v) is str:
        return f"the string {v[:40]!r}" + ("..." if len(v) > 40 else "")
    if type(v) in (int, float, Decimal):
        text = str(v)
        return f"the number {text}" if len(text) <= 40 else f"a number of {len(text)} characters"
    return json_type(v)


def _bool_check(v: Any) -> str | None:
    if type(v) is bool or (type(v) is str and v.strip(PG_SPACE).lower() in _BOOL_TEXT):
        return None
    return f"expected true or false, got {got(v)}"


def _text_check(limit: int | None, check_nul: bool) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not str:
            return f"expected a string, got {got(v)}"
        if check_nul and "\x00" in v:
            return "text cannot contain the NUL character (\\u0000)"
        if not v.isascii() and not utf8_ok(v):
            return "text cannot hold a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair)"
        if limit is not None and len(v) > limit:
            return f"{len(v)} characters is longer than the column's limit of {limit}"
        return None
    return check


# The ISO 8601 forms both Python and PostgreSQL read alike (no week dates, no basic format).
_DATE = r"\d{4}-\d{2}-\d{2}"
_TIME = r"\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"
_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2}(?::\d{2})?)?)?"
ISO_FORMS = {
    "date": re.compile(_DATE),
    "timestamp": re.compile(rf"{_DATE}(?:[T ]{_TIME}{_OFFSET})?"),
    "time": re.compile(rf"{_TIME}{_OFFSET}"),
}
# Every ASCII digit made "0": a column's values reduce to the few shapes they take.
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)


def iso_shapes_fine(strs: list[str], form: str) -> bool:
    """True when every string has one of the ISO 8601 forms ``form`` allows (it may still not parse).

    A column's values differ in their digits and rarely in their shape: the values
    are joined, their digits zeroed, and each distinct shape (a handful) matched
    once, in C-level passes. A regex over every value cost about 2 ms of the 6 ms
    that 1,000 rides with four timestamps take to check. Non-ASCII text, or a value
    holding a newline, answers False and is looked at value by value.
    """
    joined = "\n".join(strs)
    if not joined.isascii() or joined.count("\n") != len(strs) - 1:
        return False
    pattern = ISO_FORMS[form]
    return all(pattern.fullmatch(shape) for shape in
               set(joined.encode("ascii").translate(_DIGITS_TO_ZERO).decode("ascii").split("\n")))


def _parsed_by(parse: Callable[[str], Any], what: str, infinities: bool, form: re.Pattern[str]) -> Check:
    def check(v: Any) -> str | None:
        if type(v) is not str:
            return f"expected {what} as a string, got {got(v)}"
        if infinities and v.lower() in INFINITIES:
            return None
        if not form.fullmatch(v):
            return f"{v[:60]!r} is not {what}"
        try:
            parsed = parse(v)
        except ValueError:
            return f"{v[:60]!r} is not {what}"
        if not offsets_fine([parsed]):
            return f"{v[:60]!r}: PostgreSQL takes UTC offsets up to 15:59 only"
        return None
    return check


# PostgreSQL refuses a UTC offset of 16 hours or more ("time zone displacement out of range").
MAX_OFFSET = timedelta(hours=16)
_TZINFO = attrgetter("tzinfo")


def offsets_fine(parsed: list[Any]) -> bool:
    """Every parsed date, time or date-time has no offset, or one PostgreSQL takes."""
    if not parsed or type(parsed[0]) is date:
        return True
    # Their few distinct zones, picked in C (a utcoffset() per value would make a timedelta each:
    # about 140 us per 1,000 values against 35).
    zones = set(map(_TZINFO, parsed))
    return all(z is None or -MAX_OFFSET < z.utcoffset(None) < MAX_OFFSET for z in zones)


# What PostgreSQL reads as a uuid: 32 hex digits, a hyphen allowed after any group of four, in braces or not.
# (Python's uuid.UUID also takes "urn:uuid:" and hyphens anywhere.)
_HEX4 = "[0-9a-fA-F]{4}"
_UUID_TEXT = re.compile(rf"{_HEX4}(?:-?{_HEX4}){{7}}|\{{{_HEX4}(?:-?{_HEX4}){{7}}\}}")


def _uuid_check(v: Any) -> str | None:
    if type(v) is not str:
        return f"expected a uuid as a string, got {got(v)}"
    if not _UUID_TEXT.fullmatch(v):
        return f"{v[:80]!r} is not a uuid"
    return None


def _scalar(v: Any) -> str | None:
    if type(v) is dict or type(v) is list:
        return f"expected a string or a number, got {got(v)}"
    return None


def _has_nul(v: Any) -> bool:
    if type(v) is str:
        return "\x00" in v
    if type(v) is dict:
        return any("\x00" in k or _has_nul(x) for k, x in v.items())
    if type(v) is list:
        return any(_has_nul(x) for x in v)
    return False


def _not_finite(v: Any) -> bool:
    if type(v) is float:
        return not math.isfinite(v)
    if type(v) is dict:
        return any(_not_finite(x) for x in v.values())
    if type(v) is list:
        return any(_not_finite(x) for x in v)
    return False


def _json_check(v: Any) -> str | None:
    # msgpack can carry NaN and infinities; JSON cannot, so they would land as null.
    return "JSON has no NaN or Infinity" if _not_finite(v) else None


def _jsonb_check(v: Any) -> str | None:
    if _has_nul(v):
        return "jsonb cannot hold the NUL character (\\u0000)"
    return _json_check(v)


def array_shape_error(v: list[Any]) -> str | None:
    """Why PostgreSQL would refuse the array's shape, or None.

    Its arrays are rectangular: at each level every sub-array has the same length, and a level holds
    sub-arrays only or elements (and nulls) only; at most MAX_ARRAY_DIMS levels. Walked level by level,
    so no nesting depth can exhaust the stack. (PostgreSQL 17 and later read [[], []] as an empty
    array; 15 and 16 refuse it, and such a row becomes a dead letter there.)
    """
    level, dims = [v], 1
    while True:
        if dims > MAX_ARRAY_DIMS:
            return f"an array of more than {MAX_ARRAY_DIMS} dimensions (PostgreSQL's limit)"
        if len(set(map(len, level))) > 1:
            return f"sub-arrays of different lengths at dimension {dims} (PostgreSQL arrays are rectangular)"
        items = [item for node in level for item in node]
        subs = sum(type(item) is list for item in items)
        if not subs:
            return None
        if subs != len(items):
            return f"a mix of sub-arrays and elements at dimension {dims + 1}"
        level, dims = items, dims + 1


def _array_check(element: Check | None) -> Check:
    def walk(v: Any) -> str | None:
        for item in v:
            if item is None:
                continue
            if type(item) is list:
                bad = walk(item)
            elif element is not None:
                bad = element(item)
            else:
                bad = None
            if bad:
                return f"array element: {bad}"
        return None

    def check(v: Any) -> str | None:
        if type(v) is not list:
            return f"expected an array, got {got(v)}"
        return array_shape_error(v) or walk(v)  # the shape bounds the walk's depth
    return check


def _scalar_check(name: str, limit: int | None, check_nul: bool) -> Check | None:
    if name in INT_RANGES:
        return _int_check(*INT_RANGES[name], name)
    if name in FLOAT_TYPES:
        return _float_check(name)
    if name == "numeric":
        return _numeric_check
    if name == "boolean":
        return _bool_check
    if name in TEXT_TYPES:
        return _text_check(limit, check_nul)
    if name == "uuid":
        return _uuid_check
    if name == "date":
        return _parsed_by(date.fromisoformat, "an ISO 8601 date", True, ISO_FORMS["date"])
    if name in TIMESTAMP_TYPES:
        return _parsed_by(datetime.fromisoformat, "an ISO 8601 date-time", True, ISO_FORMS["timestamp"])
    if name in TIME_TYPES:
        return _parsed_by(time.fromisoformat, "an ISO 8601 time", False, ISO_FORMS["time"])
    if name == "jsonb":
        return _jsonb_check if check_nul else _json_check
    if name == "json":
        return _json_check
    return _scalar  # PostgreSQL decides; refusals land in the dead-letter table


@functools.cache  # built once per type, not once per request (keyed by a str: its hash is kept)
def type_check(data_type: str, check_nul: bool) -> Check | None:
    name, limit, dims = base_type(data_type)
    scalar = _scalar_check(name, limit, check_nul)
    if dims:
        return _array_check(scalar)
    return scalar


def check_columns(table: Table, columns: tuple[str, ...], where: str) -> None:
    """A row naming these columns: refuse generated columns and missing required ones."""
    for name in columns:
        col = table.columns[name]
        if col.generated:
            raise BodyError(f"column {name!r} is generated and cannot be written", where, name)
        if col.identity_always:
            raise BodyError(f"column {name!r} is GENERATED ALWAYS AS IDENTITY and cannot be written", where, name)
    named = set(columns)
    for col in table.columns.values():
        if col.name not in named and col.required:
            raise BodyError(f"missing column {col.name!r}, which is NOT NULL and has no default", where, col.name)


def by_column(columns: tuple[str, ...], rows: list[Any]) -> list[tuple[Any, ...]]:
    """Rows (tuples or lists, one value per column) turned column-major in one C-level pass."""
    return list(zip(*rows, strict=True)) if rows else [() for _ in columns]


def check_nulls(table: Table, columns: tuple[str, ...], rows: list[list[Any]], wheres: list[str],
                check_nul: bool) -> None:
    """Text rows (CSV): refuse nulls in NOT NULL columns and NUL characters; PostgreSQL parses the rest."""
    for name, values in zip(columns, by_column(columns, rows), strict=True):
        col = table.columns[name]
        if None in values and not col.nullable:
            k = values.index(None)
            raise BodyError(f"column {name!r} is NOT NULL, got an empty field", wheres[k], name)
        if check_nul:
            for k, v in enumerate(values):
                if v is not None and "\x00" in v:
                    raise BodyError("text cannot contain the NUL character", wheres[k], name)
        if base_type(col.data_type)[0] == "jsonb":
            for k, v in enumerate(values):
                if v is not None and "\\u0000" in v:
                    raise BodyError("jsonb cannot hold the NUL character (\\u0000)", wheres[k], name)


_NONE = type(None)
_PARSERS = {"date": (date.fromisoformat, "date"), "time with time zone": (time.fromisoformat, "time"),
            "time without time zone": (time.fromisoformat, "time")}
_PARSERS.update(dict.fromkeys(TIMESTAMP_TYPES, (datetime.fromisoformat, "timestamp")))


def _all_fine(col: Column, values: list[Any], check_nul: bool, check_finite: bool) -> bool:
    """A fast, column-at-a-time check made of C-level passes (type sets, min/max, map).

    True means every value is acceptable; False only means "look closer": the
    value-by-value check then finds the first bad one and says why.
    """
    name, limit, dims = base_type(col.data_type)
    if dims:
        return False
    types = set(map(type, values))
    types.discard(_NONE)
    if not types:
        return True
    if name in INT_RANGES:
        if types != {int}:
            return False
        ints = [v for v in values if v is not None]
        lo, hi = INT_RANGES[name]
        return lo <= min(ints) and max(ints) <= hi
    if name == "boolean":
        return types == {bool}
    if name in FLOAT_TYPES:
        if not types <= {int, float}:
            return False
        # Sizes of the non-zero values, in C-level passes (filter(None) drops nulls and zeros, which
        # every float type holds). A NaN compares false either way, so it only ever sends the column to
        # the value-by-value check, which accepts it.
        sizes = list(map(abs, filter(None, values)))
        if not sizes:
            return True
        if name == "real":  # neither past the 4-byte range nor so small it would round to zero there
            return max(sizes) < REAL_LIMIT and min(sizes) >= REAL_MIN_NORMAL
        return max(sizes) < math.inf
    if name in TEXT_TYPES:
        if types != {str} or check_nul:
            return False
        joined = "".join(filter(None, values))
        if not joined.isascii() and not utf8_ok(joined):
            return False
        return limit is None or max(len(v) for v in values if v is not None) <= limit
    parser = _PARSERS.get(name)
    if parser is not None:
        if types != {str}:
            return False
        parse, form = parser
        strs = [v for v in values if v is not None]
        if not iso_shapes_fine(strs, form):
            return False
        try:
            parsed = list(map(parse, strs))
        except ValueError:
            return False  # maybe "infinity", maybe bad: the slow path decides
        return offsets_fine(parsed)
    if name in JSON_TYPES:
        # Floats at the top, or nested ones when the body can spell NaN and infinities (msgpack), need a look.
        if float in types or (check_finite and (dict in types or list in types)):
            return False
        return name == "json" or not check_nul
    return False


# Up to this many rows, each value goes straight to its check: the column-wide passes of _all_fine
# cost more than they save (parse_body of one ride: 38 -> 27 us; of two, 46 -> 36 us; of four, a loss).
FEW_ROWS = 2


def check_rows(table: Table, columns: tuple[str, ...], rows: list[Any], wheres: list[str],
               check_nul: bool, check_finite: bool = True) -> None:
    """Refuse the first value that cannot be its column's type (raises BodyError naming row and column).

    ``check_nul`` / ``check_finite``: the body may hold a NUL character / a NaN or an infinity (JSON text
    cannot spell either; msgpack can); False lets the column-wide passes skip looking for them.
    """
    few = len(rows) <= FEW_ROWS
    for name, values in zip(columns, by_column(columns, rows), strict=True):
        col = table.columns[name]
        if None in values and not col.nullable:
            k = values.index(None)
            raise BodyError(f"column {name!r} is NOT NULL, got null", wheres[k], name)
        if not few and _all_fine(col, values, check_nul, check_finite):
            continue
        check = type_check(col.data_type, check_nul)
        if check is None:
            continue
        for k, v in enumerate(values):
            if v is not None:
                bad = check(v)
                if bad:
                    raise BodyError(bad, wheres[k], name)
