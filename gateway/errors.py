"""Errors a request body can earn, and the JSON names of value types used in their messages."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgpack

_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number", Decimal: "number",
               bool: "boolean", type(None): "null", bytes: "binary", msgpack.ExtType: "ext",
               msgpack.Timestamp: "timestamp"}


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (msgpack adds binary, ext and timestamp), never Python's."""
    return _TYPE_NAMES.get(type(value), "unsupported value")


class BodyError(ValueError):
    """The body cannot become rows (400); ``where`` and ``column`` locate the fault for the client."""

    status = 400

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
