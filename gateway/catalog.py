"""What the gateway knows of a writable table: its columns, read from PostgreSQL's catalog (gateway.db)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

# PostgreSQL types whose values travel as JSON text (any JSON value is valid for them).
JSON_TYPES = frozenset({"json", "jsonb"})
JSON_ARRAY_TYPES = frozenset(f"{t}[]" for t in JSON_TYPES)


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    has_default: bool
    identity: bool = False
    generated: bool = False
    # GENERATED ALWAYS AS IDENTITY: INSERT refuses a value for it, but COPY would store one, so we refuse.
    identity_always: bool = False

    @property
    def required(self) -> bool:
        """Every row must name it: NOT NULL, and nothing fills it in."""
        return not (self.nullable or self.has_default or self.identity or self.generated)


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]

    @cached_property  # a Table is never changed: a catalog refresh makes a new one
    def exact_numbers(self) -> bool:
        """Numbers must be read exactly (not as double precision): the table has numeric columns."""
        return any(c.data_type.startswith("numeric") for c in self.columns.values())

    @cached_property
    def array_columns(self) -> frozenset[str]:
        """Array columns but json[] and jsonb[] (json_array_columns)."""
        return frozenset(c.name for c in self.columns.values()
                         if c.data_type.endswith("[]") and c.name not in self.json_array_columns)

    @cached_property
    def json_array_columns(self) -> frozenset[str]:
        # format_type names an array of any dimensions "jsonb[]"
        return frozenset(c.name for c in self.columns.values() if c.data_type in JSON_ARRAY_TYPES)

    @cached_property
    def json_columns(self) -> frozenset[str]:
        return frozenset(c.name for c in self.columns.values() if c.data_type in JSON_TYPES)
