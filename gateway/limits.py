"""The limits a request body is held to, and the errors that name them (gateway.max_* config keys)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import BodyError


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_rows: int
    max_depth: int
    max_string_bytes: int
    body_timeout_s: float = 60.0


class InflightBytes:
    """Bytes of request bodies the gateway holds at once (gateway.max_inflight_bytes): bodies, and the rows
    parsed from them (several times their size), are memory no pending-work bound counts yet.

    A request holds the decoded bytes it has received so far, growing as they arrive: a client that
    announces a large Content-Length and sends nothing holds nothing. With nothing else held, one
    request may hold any size: gateway.max_body_bytes bounds it alone.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class InflightFull(Exception):
    """A body would pass gateway.max_inflight_bytes: the request is answered 503 with Retry-After."""


class Hold:
    """One request's share of :class:`InflightBytes`; release it exactly once."""

    def __init__(self, pool: InflightBytes) -> None:
        self._pool = pool
        self.size = 0

    def grow_to(self, n: int) -> bool:
        extra = n - self.size
        if extra <= 0:
            return True
        pool = self._pool
        if pool.used - self.size > 0 and pool.used + extra > pool.limit:
            return False
        pool.used += extra
        self.size = n
        return True

    def release(self) -> None:
        self._pool.used -= self.size
        self.size = 0


class LimitError(BodyError):
    """The body passes one of the gateway's limits: ``limit`` names the config key, ``value`` its setting."""

    def __init__(self, message: str, *, limit: str, value: float, status: int,
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


def too_large(limit: int, stage: str) -> LimitError:
    """``stage``: "body" (no coding), "compressed" (bytes received) or "decoded" (bytes once inflated)."""
    what = "compressed body" if stage == "compressed" else "body"
    once = " once decompressed" if stage == "decoded" else ""
    return LimitError(f"{what} is larger than gateway.max_body_bytes ({limit} bytes){once}",
                      limit="gateway.max_body_bytes", value=limit, status=413)


def too_slow(limits: Limits) -> LimitError:
    return LimitError(f"the body did not arrive within gateway.body_timeout_s ({limits.body_timeout_s:g} s)",
                      limit="gateway.body_timeout_s", value=limits.body_timeout_s, status=408)


def too_many_rows(limits: Limits) -> LimitError:
    return LimitError(f"more than gateway.max_rows ({limits.max_rows}) rows",
                      limit="gateway.max_rows", value=limits.max_rows, status=413)


def too_deep(limits: Limits, where: str, column: str) -> LimitError:
    return LimitError(f"column {column!r} nests deeper than gateway.max_depth ({limits.max_depth})",
                      limit="gateway.max_depth", value=limits.max_depth, status=400, where=where, column=column)


def too_long_error(limits: Limits, where: str, column: str | None) -> LimitError:
    what = f"column {column!r} holds a string" if column is not None else "a column name is"
    return LimitError(f"{what} longer than gateway.max_string_bytes ({limits.max_string_bytes} bytes)",
                      limit="gateway.max_string_bytes", value=limits.max_string_bytes, status=400,
                      where=where, column=column)


def too_long(value: str | bytes, limit: int) -> bool:
    """Whether a str's UTF-8 (or a bytes') length passes ``limit``; encodes only when it might."""
    n = len(value)
    if n > limit:
        return True  # a str of n characters has at least n UTF-8 bytes
    if type(value) is bytes or n * 4 <= limit:
        return False
    return len(value.encode("utf-8", "surrogatepass")) > limit  # type: ignore[union-attr]


