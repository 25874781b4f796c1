"""The gateway's append-only journal of accepted jobs (``gateway.durability = "disk"``).

Every accepted job's frame is appended and fsynced before the client gets its
202; appends that arrive while one fsync runs share the next one (group
commit), so the cost is one fsync per group, not per request.

On disk: segment files ``<journal_dir>/<seq>.journal``, each a run of records
``[u32 length][u32 crc32][job frame]`` (little-endian). A record cut short by
a crash, or whose checksum does not match, ends its segment's replay: its
append never completed, so no client was told it was accepted.

An append is durable only once every byte of its group is written and
fsynced. When a write or fsync fails (a full disk cuts a write short, then
refuses the rest), every job of that group is refused and the segment is cut
back to where the group began, so later records never sit behind a torn one.
If even the cut fails, that segment is closed for good and later groups go to
a new one; replay reads each segment on its own, so a torn tail hides nothing
written after it.

A segment is deleted once every job in it is final (``done``); the segment
being written is kept. At start the gateway replays all segments, asks the
ledger which jobs are already final, copies the others into a fresh segment
and deletes the old ones.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class JournalInUse(OSError):
    """Another gateway holds this journal folder."""


_HEADER = struct.Struct("<II")
SUFFIX = ".journal"


def read_segment(path: Path) -> Iterator[bytes]:
    """The intact records of one segment, in order; stops at the first torn or corrupt one."""
    data = path.read_bytes()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            log.warning("journal %s: record at byte %d is incomplete or corrupt; ignoring the rest", path, offset)
            return
        yield payload
        offset = start + length


def _encode(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` or raise: a short write is how a filling disk first shows."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, f"write stored 0 of the last {len(view)} bytes")
        view = view[written:]


class Journal:
    def __init__(self, directory: Path, segment_bytes: int, fsync: bool = True) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._seq = 0
        self._fd = -1
        self._size = 0
        self._live: dict[int, int] = {}  # segment seq -> jobs in it not yet final
        self._where: dict[str, int] = {}  # job id -> segment seq
        self._buffer: list[bytes] = []
        self._ids: list[str] = []
        self._group: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._lock_fd = -1
        self._torn = False  # the segment holds a failed group it could not be cut back from
        self.fsyncs = 0
        self.failed_groups = 0

    # -- start-up ---------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SUFFIX}"), key=lambda p: int(p.stem))

    def replay(self) -> list[bytes]:
        """Lock the folder, then return every intact job frame in it, oldest first (before :meth:`open`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise JournalInUse(
                f"journal folder {self.directory} is in use by another gateway; "
                "give each gateway its own gateway.journal_dir"
            ) from None
        return [frame for path in self.segments() for frame in read_segment(path)]

    def open(self, keep: list[tuple[str, bytes]]) -> None:
        """Start a fresh segment holding ``keep`` (job id, frame), then delete the older segments."""
        old = self.segments()
        self._seq = int(old[-1].stem) + 1 if old else 1
        self._open_segment()
        if keep:
            # If this fails the gateway does not start and the old segments stay; replay
            # keys jobs by id, so copies left in this segment are harmless.
            self._write(b"".join(_encode(frame) for _, frame in keep))
            self._live[self._seq] = len(keep)
            for job_id, _ in keep:
                self._where[job_id] = self._seq
        for path in old:
            path.unlink()
        self._sync_dir()

    def _open_segment(self) -> None:
        path = self.directory / f"{self._seq:012d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = 0
        self._live.setdefault(self._seq, 0)
        self._sync_dir()

    def _sync(self) -> None:
        if self._fsync:
            os.fdatasync(self._fd)
        self.fsyncs += 1

    def _sync_dir(self) -> None:
        if self._fsync:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- running ----------------------------------------------------------------------------

    async def append(self, job_id: str, frame: bytes) -> None:
        """Return once the frame is on disk (fsynced together with whatever else arrived meanwhile)."""
        if self._group is None:
            self._group = asyncio.get_running_loop().create_future()
        group = self._group
        self._buffer.append(_encode(frame))
        self._ids.append(job_id)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(group)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._buffer:
            data, ids, group = b"".join(self._buffer), self._ids, self._group
            self._buffer, self._ids, self._group = [], [], None
            assert group is not None
            try:
                if self._fd < 0:
                    self._open_segment()  # the last one was retired; a failure here refuses this group only
                await loop.run_in_executor(None, self._write, data)
            except OSError as exc:
                self.failed_groups += 1
                log.error("journal: a group of %d jobs was not recorded (%d groups failed so far): %s",
                          len(ids), self.failed_groups, exc)
                group.set_exception(exc)  # every job of the group: none of its bytes stay on disk
                if self._torn:
                    self._retire()
                continue
            seq = self._seq
            self._live[seq] = self._live.get(seq, 0) + len(ids)
            for job_id in ids:
                self._where[job_id] = seq
            group.set_result(None)
            if self._size >= self.segment_bytes:
                self._retire()

    def _write(self, data: bytes) -> None:
        """Append and fsync ``data`` (in a worker thread); on failure, leave no byte of it behind."""
        start = self._size
        try:
            _write_all(self._fd, data)
            self._sync()
        except OSError:
            self._cut_back(start)
            raise
        self._size += len(data)

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            self._sync()
        except OSError as exc:
            # Appending behind a torn record would hide every later record from replay.
            log.error("journal: cannot cut segment %d back to byte %d (%s); later jobs go to a new segment",
                      self._seq, size, exc)
            self._torn = True

    def _retire(self) -> None:
        """Stop appending to the current segment; the next group opens the next one."""
        try:
            os.close(self._fd)
        except OSError as exc:  # the descriptor is released anyway; its data was fsynced or refused
            log.warning("journal: closing segment %d: %s", self._seq, exc)
        self._fd = -1
        self._torn = False
        finished = self._seq
        self._seq += 1
        self._reclaim(finished)

    def done(self, job_id: str) -> None:
        """The job is final: its record is no longer needed."""
        seq = self._where.pop(job_id, None)
        if seq is None:
            return
        self._live[seq] -= 1
        self._reclaim(seq)

    def _reclaim(self, seq: int) -> None:
        if seq != self._seq and self._live.get(seq) == 0:
            del self._live[seq]
            (self.directory / f"{seq:012d}{SUFFIX}").unlink(missing_ok=True)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.segments())

    async def close(self) -> None:
        """Finish pending writes; with no job left unfinished, leave an empty journal behind."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._where:
            for path in self.segments():
                path.unlink()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1
