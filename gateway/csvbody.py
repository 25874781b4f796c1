"""text/csv bodies, read as PostgreSQL's COPY ... (FORMAT csv) reads them (see gateway.formats)."""

from __future__ import annotations

from gateway.errors import BodyError
from gateway.limits import Limits, too_long, too_long_error, too_many_rows

UTF8_BOM = b"\xef\xbb\xbf"  # a byte order mark, as some Windows tools write


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
    skip = len(UTF8_BOM) if body.startswith(UTF8_BOM) else 0
    try:
        text = str(memoryview(body)[skip:], "utf-8")
    except UnicodeDecodeError as bad:
        at = skip + bad.start
        line, column = body.count(b"\n", 0, at) + 1, at - body.rfind(b"\n", 0, at)
        raise BodyError(f"not valid UTF-8: byte 0x{body[at]:02x} at byte {column}", f"line {line}") from bad
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
            raise too_many_rows(limits)
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
        if value is not None and too_long(value, limits.max_string_bytes):
            column = columns[i] if columns is not None and i < len(columns) else None
            raise too_long_error(limits, f"line {number}", column)
