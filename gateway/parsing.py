"""Request bodies to job groups: pure functions, no I/O.

Accepted media types: ``application/json`` (one object or an array of objects)
and ``application/x-ndjson`` (one object per line, blank lines allowed).
Errors name where the problem is: ``line N`` (1-based) for NDJSON, ``index N``
(0-based) for a JSON array, and the column when one is at fault.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


class UnknownColumn(BodyError):
    """A row names a column the table does not have (as far as the catalog knows)."""


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    has_default: bool
    identity: bool = False
    generated: bool = False

    @property
    def required(self) -> bool:
        """Every row must name it: NOT NULL, and nothing fills it in."""
        return not (self.nullable or self.has_default or self.identity or self.generated)


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
    """Parse a JSON or NDJSON body into checked groups of rows (see :func:`rows_from_objects`)."""
    objects = _objects_json(body) if media_type == JSON else _objects_ndjson(body)
    return rows_from_objects(objects, table, check_nul=b"\\u0000" in body)


def rows_from_objects(objects: Iterable[tuple[str, Any]], table: Table, check_nul: bool = True) -> tuple[Group, ...]:
    """Objects to groups of rows; objects naming the same columns share a group.

    Every row is checked against the table (gateway.validate) before anything
    is sent: the first bad value raises BodyError naming its row and column.
    ``check_nul`` may be False when the caller knows the body holds no NUL.
    """
    from gateway.validate import check_columns, check_rows  # validate imports this module's types

    json_columns = table.json_columns()
    # key set -> (columns in the order first seen, rows, where each row came from)
    groups: dict[frozenset[str], tuple[tuple[str, ...], list[list[Any]], list[str]]] = {}
    last_keys: Any = None
    last_columns: tuple[str, ...] = ()
    last_rows: list[list[Any]] = []
    last_wheres: list[str] = []
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
                        raise UnknownColumn(f"unknown column {name!r} for table {table.name!r}", where, name)
                check_columns(table, tuple(obj), where)
                groups[key_set] = (tuple(obj), [], [])
            last_keys = keys
            last_columns, last_rows, last_wheres = groups[key_set]
        last_rows.append([obj[c] for c in last_columns])
        last_wheres.append(where)
    if not groups:
        raise BodyError("the body holds no rows")
    out = []
    for columns, rows, wheres in groups.values():
        check_rows(table, columns, rows, wheres, check_nul)
        for i, name in enumerate(columns):
            if name in json_columns:
                for k, row in enumerate(rows):
                    try:
                        row[i] = orjson.dumps(row[i]).decode()
                    except TypeError as exc:  # orjson: nested too deeply, or not JSON at all
                        raise BodyError(f"value cannot be stored as JSON: {exc}", wheres[k], name) from exc
        out.append(Group(columns, rows))
    return tuple(out)
