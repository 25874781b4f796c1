"""Request bodies to job groups: pure functions, no I/O.

Accepted media types: ``application/json`` (one object or an array of objects)
and ``application/x-ndjson`` (one object per line, blank lines allowed).
Errors name where the problem is: ``line N`` (1-based) for NDJSON, ``index N``
(0-based) for a JSON array, and the column when one is at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from common.wire import Group

JSON = "application/json"
NDJSON = "application/x-ndjson"
MEDIA_TYPES = (JSON, NDJSON)

# PostgreSQL types whose values travel as JSON text (any JSON value is valid for them).
JSON_TYPES = frozenset({"json", "jsonb"})


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages a client can act on."""
    return _JSON_TYPES.get(type(value), type(value).__name__)


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


class BodyError(ValueError):
    """The body cannot become rows; ``where`` and ``column`` locate the fault for the client."""

    def __init__(self, message: str, where: str | None = None, column: str | None = None) -> None:
        self.where = where
        self.column = column
        super().__init__(f"{where}: {message}" if where else message)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self)}
        if self.where:
            kind, _, number = self.where.partition(" ")
            out[kind] = int(number)
        if self.column is not None:
            out["column"] = self.column
        return out


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    has_default: bool


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]

    def json_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns.values() if c.data_type in JSON_TYPES)


def _objects_json(body: bytes) -> Iterator[tuple[str, Any]]:
    if not body.strip():
        return  # an empty body holds no rows, as an empty NDJSON body does (not "invalid JSON")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"not valid JSON: {exc}") from exc
    if isinstance(doc, dict):
        yield "index 0", doc
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            yield f"index {i}", item
    else:
        raise BodyError(f"expected a JSON object or an array of objects, got {json_type(doc)}")


def _objects_ndjson(body: bytes) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BodyError(f"not valid JSON: {exc}", f"line {number}") from exc


def parse_rows(body: bytes, media_type: str, table: Table) -> tuple[Group, ...]:
    """Parse a body into groups of rows; objects naming the same columns share a group."""
    objects = _objects_json(body) if media_type == JSON else _objects_ndjson(body)
    json_columns = table.json_columns()
    # key set -> (columns in the order first seen, rows)
    groups: dict[frozenset[str], tuple[tuple[str, ...], list[list[Any]]]] = {}
    last_keys: Any = None
    last_columns: tuple[str, ...] = ()
    last_rows: list[list[Any]] = []
    for where, obj in objects:
        if not isinstance(obj, dict):
            raise BodyError(f"expected a JSON object, got {json_type(obj)}", where)
        keys = obj.keys()
        if keys != last_keys:  # set comparison in C; the common case is one shape per request
            key_set = frozenset(keys)
            if key_set not in groups:
                if not key_set:
                    raise BodyError("object has no columns", where)
                for name in obj:
                    if name not in table.columns:
                        raise BodyError(f"unknown column {name!r} for table {table.name!r}", where, name)
                groups[key_set] = (tuple(obj), [])
            last_keys = keys
            last_columns, last_rows = groups[key_set]
        row = [obj[c] for c in last_columns]
        if json_columns:
            for i, name in enumerate(last_columns):
                if name in json_columns:
                    row[i] = orjson.dumps(row[i]).decode()
        last_rows.append(row)
    if not groups:
        raise BodyError("the body holds no rows")
    return tuple(Group(columns, rows) for columns, rows in groups.values())
