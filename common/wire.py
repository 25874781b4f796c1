"""The zingest wire protocol: the only module that packs or unpacks msgpack.

Two messages cross ZeroMQ, each one single-part frame holding one msgpack array
whose first element is the protocol version (currently 1) and second a kind tag.

Job frame, gateway PUSH -> sink PULL::

    [1, "J", job_id: str, table: str, accepted_at: float (unix seconds),
     idempotency_key: str | nil,
     groups: [[columns: [str, ...], rows: [[value, ...], ...], (positions: [int, ...])], ...]]

  A job is one request's rows. Rows are arrays; the column names are sent once
  per group. A request whose objects do not all name the same columns becomes
  several groups, so each COPY names exactly the columns given and PostgreSQL
  fills the others with their defaults; such groups also carry each row's
  position (from 0) in the request, so a refused row is reported where the
  client sent it. Values are msgpack nil, bool, int,
  float and str (json/jsonb values are already serialised to JSON text).
  ``idempotency_key`` is the client's Idempotency-Key header, if it sent one
  (1 to MAX_IDEMPOTENCY_KEY_LEN printable ASCII characters: idempotency_key_ok);
  the ledger keeps it unique per table.

  The gateway's journal stores these same frames, one per accepted job.

Status frame, sink PUB -> gateway SUB::

    [1, "S", [[job_id: str, state: str, rows: int, committed_at: float | nil,
               error: str | nil, rows_committed: int, rows_rejected: int,
               errors: [[row: int, column: str | nil, sqlstate: str | nil, message: str], ...]],
              ...]]

  One frame carries the statuses of every job in one batch. ``state`` is a
  :class:`JobState` value other than ``accepted``: ``committed`` (every row),
  ``partial`` (some rows committed, the others in the dead-letter table) or
  ``failed`` (no row committed). ``errors`` holds the first few rejected rows;
  ``row`` is the row's 0-based position among the job's rows.

A frame that is not valid msgpack, has another version, another kind or the
wrong shape raises :class:`WireError` from the cause. Never pickle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
KIND_JOB = "J"
KIND_STATUS = "S"


class WireError(ValueError):
    """A frame could not be decoded."""


class JobState(str, enum.Enum):
    ACCEPTED = "accepted"
    COMMITTED = "committed"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self is not JobState.ACCEPTED


Row = list[Any]


@dataclass(frozen=True, slots=True)
class Group:
    columns: tuple[str, ...]
    rows: list[Row]
    # Each row's position among the request's rows; None when the group holds them all, in order.
    positions: list[int] | None = None

    def position(self, k: int, offset: int) -> int:
        return self.positions[k] if self.positions is not None else offset + k


MAX_IDEMPOTENCY_KEY_LEN = 255


def idempotency_key_ok(key: str, longest: int = MAX_IDEMPOTENCY_KEY_LEN) -> bool:
    """A key a job may carry: 1 to ``longest`` printable ASCII characters (the gateway's rule, and a client's)."""
    return 0 < len(key) <= longest and key.isascii() and key.isprintable()


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    table: str
    accepted_at: float
    groups: tuple[Group, ...]
    idempotency_key: str | None = None

    @property
    def row_count(self) -> int:
        return sum(len(g.rows) for g in self.groups)


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    column: str | None
    sqlstate: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Status:
    job_id: str
    state: JobState
    rows: int
    committed_at: float | None = None
    error: str | None = None
    rows_committed: int = 0
    rows_rejected: int = 0
    errors: tuple[RowError, ...] = ()


_packer = msgpack.Packer(use_bin_type=True)


def encode_job(job: Job) -> bytes:
    """The job's frame; WireError if a value cannot be packed (e.g. nested deeper than msgpack allows)."""
    groups = [[list(g.columns), g.rows] if g.positions is None else [list(g.columns), g.rows, g.positions]
              for g in job.groups]
    try:
        return _packer.pack([VERSION, KIND_JOB, job.job_id, job.table, job.accepted_at, job.idempotency_key, groups])
    except (ValueError, TypeError, OverflowError) as exc:
        raise WireError(f"cannot encode the job: {exc}") from exc


def _unpack(frame: bytes, kind: str) -> list[Any]:
    try:
        msg = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"frame is not valid msgpack: {exc}") from exc
    if not isinstance(msg, list) or len(msg) < 2:
        raise WireError("frame is not a zingest message")
    if msg[0] != VERSION:
        raise WireError(f"unsupported wire version {msg[0]!r} (this side speaks {VERSION})")
    if msg[1] != kind:
        raise WireError(f"expected a {kind!r} frame, got {msg[1]!r}")
    return msg


def decode_job(frame: bytes) -> Job:
    msg = _unpack(frame, KIND_JOB)
    try:
        _, _, job_id, table, accepted_at, key, raw_groups = msg
        groups = []
        for raw in raw_groups:
            if not isinstance(raw, list) or len(raw) not in (2, 3):
                raise TypeError("a group is [columns, rows] or [columns, rows, positions]")
            columns, rows = raw[0], raw[1]
            # A str is iterable too: without the list check "ab" would decode as columns ("a", "b").
            if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns) and isinstance(rows, list)):
                raise TypeError("group columns must be a list of strings and rows a list")
            width = len(columns)
            if any(not isinstance(r, list) or len(r) != width for r in rows):
                raise TypeError("every row must be an array as wide as the group's columns")
            positions = raw[2] if len(raw) == 3 else None
            if positions is not None and (not isinstance(positions, list) or len(positions) != len(rows)
                                          or not all(type(p) is int for p in positions)):
                raise TypeError("group positions must be one integer per row")
            groups.append(Group(tuple(columns), rows, positions))
        if not isinstance(job_id, str) or not isinstance(table, str):
            raise TypeError("job id and table must be strings")
        if key is not None and not isinstance(key, str):
            raise TypeError("idempotency key must be a string or nil")
        return Job(job_id, table, float(accepted_at), tuple(groups), key)
    except (TypeError, ValueError) as exc:
        raise WireError(f"malformed job frame: {exc}") from exc


def encode_statuses(statuses: list[Status]) -> bytes:
    items = [
        [s.job_id, s.state.value, s.rows, s.committed_at, s.error, s.rows_committed, s.rows_rejected,
         [[e.row, e.column, e.sqlstate, e.message] for e in s.errors]]
        for s in statuses
    ]
    return _packer.pack([VERSION, KIND_STATUS, items])


def decode_statuses(frame: bytes) -> list[Status]:
    msg = _unpack(frame, KIND_STATUS)
    try:
        _, _, items = msg
        out = []
        for job_id, state, rows, committed_at, error, rows_committed, rows_rejected, errors in items:
            row_errors = tuple(RowError(int(r), c, st, str(m)) for r, c, st, m in errors)
            out.append(Status(str(job_id), JobState(state), int(rows), committed_at, error,
                              int(rows_committed), int(rows_rejected), row_errors))
        return out
    except (TypeError, ValueError) as exc:
        raise WireError(f"malformed status frame: {exc}") from exc
