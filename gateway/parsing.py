"""Row objects to job groups, checked against the table: pure functions, no I/O.

Bodies are decoded into row objects by gateway.formats; this module groups
them by the columns they name (one COPY per group, so omitted columns take
their defaults), has gateway.validate check every value, and turns json/jsonb
values into JSON text. Errors name where the problem is (``line N``, ``index N``)
and the column.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson

from common.wire import Group
from gateway.catalog import Table
from gateway.errors import BodyError, UnknownColumn, json_type
from gateway.validate import check_columns, check_nulls, check_rows

__all__ = ["rows_from_objects", "rows_from_text"]

# One group of rows on its way to a job: columns, rows, where each row came from, positions in the request.
_Rows = tuple[tuple[str, ...], list[Any], list[str], list[int] | None]

def rows_from_objects(objects: Iterable[tuple[str, Any]], table: Table, check_nul: bool = True,
                      check_finite: bool = True) -> tuple[Group, ...]:
    """Objects to groups of rows; objects naming the same columns share a group.

    Every row is checked against the table (gateway.validate) before anything
    is sent: the first bad value raises BodyError naming its row and column.
    ``check_nul`` / ``check_finite`` may be False when the caller knows the body holds no NUL / no NaN
    or infinity.
    """
    pairs = list(objects)
    if not pairs:
        raise BodyError("the body holds no rows")
    wheres, objs = map(list, zip(*pairs, strict=True))
    # The common request: every row an object naming the same columns in the same order.
    # Found and picked by C-level passes; anything else goes through the grouping loop.
    # (Each object has as many keys as the first and holds every one of its keys: the same key set.)
    if set(map(type, objs)) == {dict}:
        columns = tuple(objs[0])
        if set(map(len, objs)) == {len(columns)}:
            _check_names(table, columns, wheres[0])
            pick = itemgetter(*columns) if len(columns) > 1 else _one(columns[0])
            try:
                rows = list(map(pick, objs))
            except KeyError:
                pass  # some object names another column: grouped below
            else:
                return _checked(table, [(columns, rows, wheres, None)], check_nul, check_finite)
    return _checked(table, _grouped(table, wheres, objs), check_nul, check_finite)


def _check_names(table: Table, columns: tuple[str, ...], where: str) -> None:
    if not columns:
        raise BodyError("object has no columns", where)
    for name in columns:
        if name not in table.columns:
            raise UnknownColumn(f"unknown column {name!r} for table {table.name!r}", where, name)
    check_columns(table, columns, where)


def _grouped(table: Table, wheres: list[str], objs: list[Any]) -> list[_Rows]:
    """Rows grouped by the columns their objects name, each row with its position in the request."""
    # key set -> (columns in the order first seen, rows, where each row came from, positions)
    groups: dict[frozenset[str], tuple[tuple[str, ...], list[Any], list[str], list[int]]] = {}
    last_keys: Any = None
    last_rows: list[Any] = []
    last_wheres: list[str] = []
    last_positions: list[int] = []
    pick: Callable[[dict[str, Any]], Any] = tuple
    for position, (where, obj) in enumerate(zip(wheres, objs, strict=True)):
        if not isinstance(obj, dict):
            raise BodyError(f"expected a JSON object, got {json_type(obj)}", where)
        keys = obj.keys()
        if keys != last_keys:  # set comparison in C
            key_set = frozenset(keys)
            if key_set not in groups:
                _check_names(table, tuple(obj), where)
                groups[key_set] = (tuple(obj), [], [], [])
            last_keys = keys
            columns, last_rows, last_wheres, last_positions = groups[key_set]
            # The row's values in the group's column order, as a tuple, in C.
            pick = itemgetter(*columns) if len(columns) > 1 else _one(columns[0])
        last_rows.append(pick(obj))
        last_wheres.append(where)
        last_positions.append(position)
    return list(groups.values())


def _checked(table: Table, groups: list[_Rows], check_nul: bool, check_finite: bool) -> tuple[Group, ...]:
    """Every group's values checked, exact numbers and json values made text: the job's groups."""
    json_columns = table.json_columns
    out = []
    exact = table.exact_numbers
    several = len(groups) > 1  # then each row carries its position in the request
    for columns, rows, wheres, positions in groups:
        check_rows(table, columns, rows, wheres, check_nul, check_finite)
        arrays = table.array_columns.intersection(columns)
        as_json = json_columns.union(table.json_array_columns).intersection(columns)
        if exact or arrays or as_json:
            rows[:] = map(list, rows)  # about to be rewritten in place
            _numbers_as_text(columns, rows, as_json)
            if arrays:
                _uniform_arrays(columns, rows, arrays)
        for i, name in enumerate(columns):
            if name not in as_json:
                continue
            to_text = _json_text if name in json_columns else _json_elements
            for k, row in enumerate(rows):
                if row[i] is None:
                    continue  # JSON null in a json column is SQL NULL, as in every other column
                try:
                    row[i] = to_text(row[i])
                except TypeError as exc:  # orjson: nested too deeply, or not JSON at all
                    raise BodyError(f"value cannot be stored as JSON: {exc}", wheres[k], name) from exc
        out.append(Group(columns, rows, positions if several else None))
    return tuple(out)


def _one(column: str) -> Callable[[dict[str, Any]], tuple[Any]]:
    return lambda obj: (obj[column],)


_INT64 = range(-(2**63), 2**63)


def _as_text(value: Any) -> Any:
    if type(value) is list:
        return _map_leaves(value, _as_text)
    if type(value) is Decimal or (type(value) is int and value not in _INT64):
        return str(value)  # exact; PostgreSQL parses it as the column's type
    return value


def _numbers_as_text(columns: tuple[str, ...], rows: list[list[Any]], json_columns: frozenset[str]) -> None:
    """Numbers read exactly (Decimal, integers past 64 bits) travel as their text: msgpack has no such types."""
    for i, name in enumerate(columns):
        if name in json_columns:
            continue
        for row in rows:
            v = row[i]
            if type(v) is Decimal or type(v) is list or (type(v) is int and v not in _INT64):
                row[i] = _as_text(v)


def _uniform_arrays(columns: tuple[str, ...], rows: list[list[Any]], arrays: frozenset[str]) -> None:
    """Array values the sink can COPY: psycopg writes a list only when its elements share one Python type.

    JSON mixes them where PostgreSQL does not mind ([1, 2.5] for float8[], [1.5, "2"] for numeric[]):
    such an array travels with every element as the text PostgreSQL reads for the element type.
    (Elements of json/jsonb arrays travel as JSON text, made in _checked.)
    """
    for i, name in enumerate(columns):
        if name not in arrays:
            continue
        for row in rows:
            value = row[i]
            if type(value) is list and len(_leaf_types(value, set())) > 1:
                row[i] = _map_leaves(value, _element_text)


def _leaf_types(value: list[Any], seen: set[type]) -> set[type]:
    for v in value:
        if type(v) is list:
            _leaf_types(v, seen)
        elif v is not None:
            seen.add(type(v))
    return seen


def _map_leaves(value: list[Any], f: Callable[[Any], Any]) -> list[Any]:
    return [_map_leaves(v, f) if type(v) is list else (None if v is None else f(v)) for v in value]


def _json_text(v: Any) -> str:
    return orjson.dumps(v, default=_exact_number).decode()


def _json_elements(v: list[Any]) -> list[Any]:
    """A json[]/jsonb[] value: each element as JSON text (a string element is the JSON string)."""
    return _map_leaves(v, _json_text)


def _element_text(v: Any) -> str:
    if type(v) is bool:
        return "true" if v else "false"
    return v if type(v) is str else str(v)


def _exact_number(value: Any) -> Any:
    """orjson's fallback for Decimal (bodies parsed exactly): json/jsonb keep numbers as double precision."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and abs(value) < 2**63:
            return int(value)
        f = float(value)
        if math.isfinite(f):
            return f
        raise TypeError(f"the number {value} does not fit a double precision value")
    raise TypeError(f"{json_type(value)} values cannot be stored as JSON")


def rows_from_text(columns: tuple[str, ...], rows: list[list[str | None]], wheres: list[str], table: Table,
                   check_nul: bool) -> tuple[Group, ...]:
    """CSV rows (text or None) to one group: columns and NOT NULL checked here, types by PostgreSQL.

    Every header column is named by every row, so an empty field is NULL, not the column's default.
    """
    if not rows:
        raise BodyError("the body holds no rows")
    for name in columns:
        if name not in table.columns:
            raise UnknownColumn(f"unknown column {name!r} for table {table.name!r}", "line 1", name)
    check_columns(table, columns, "line 1")
    check_nulls(table, columns, rows, wheres, check_nul)
    return (Group(columns, rows),)
