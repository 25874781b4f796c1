"""The journal on a real filesystem when the disk fills: what replay finds is exactly what was acknowledged.

A full disk cannot be made cheaply without privileges, so most tests replace
``os.write`` (and ``os.fdatasync``, ``os.ftruncate``) for the journal's own
descriptor only; every other descriptor gets the real call. The last test uses
a real 512 KiB tmpfs inside an unprivileged user namespace and is skipped
where the kernel does not allow one.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.journal import Journal

SEGMENT_BYTES = 1 << 20
REAL_WRITE = os.write
REAL_FDATASYNC = os.fdatasync


def frame(name: str) -> bytes:
    return f"job {name} ".encode() * 20


def open_journal(directory: Path) -> Journal:
    journal = Journal(directory, SEGMENT_BYTES)
    assert journal.replay() == []
    journal.open([])
    return journal


async def restart(directory: Path) -> list[bytes]:
    """The frames a gateway restarting on ``directory`` would replay."""
    fresh = Journal(directory, SEGMENT_BYTES)
    try:
        return fresh.replay()
    finally:
        await fresh.close()


def sizes(journal: Journal) -> list[int]:
    return [p.stat().st_size for p in journal.segments()]


class DiskFull:
    """``os.write`` for the journal's descriptor: stores ``room`` more bytes (a short write), then ENOSPC."""

    def __init__(self, journal: Journal, room: int) -> None:
        self.journal = journal
        self.room = room
        self.refused = 0

    def __call__(self, fd: int, data: bytes) -> int:
        if fd != self.journal._fd:
            return REAL_WRITE(fd, data)
        if self.room == 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = REAL_WRITE(fd, memoryview(data)[: self.room])
        self.room -= written
        return written


def fdatasync_fails_once(journal: Journal) -> Callable[[int], None]:
    """The group's fsync fails; the one after cutting the segment back succeeds."""
    failed = False

    def fdatasync(fd: int) -> None:
        nonlocal failed
        if fd == journal._fd and not failed:
            failed = True
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        REAL_FDATASYNC(fd)
    return fdatasync


def no_ftruncate(fd: int, length: int) -> None:
    raise OSError(errno.EIO, os.strerror(errno.EIO))


async def append_together(journal: Journal, *names: str) -> list[BaseException | None]:
    """Append in one turn of the event loop, so the frames share one group commit."""
    return await asyncio.gather(*(journal.append(n, frame(n)) for n in names), return_exceptions=True)


@pytest.mark.parametrize("fault", ["short write", "no room at all", "fsync fails"])
def test_a_failed_group_is_refused_whole_and_leaves_no_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            fault: str) -> None:
    async def scenario() -> None:
        journal = open_journal(tmp_path)
        await journal.append("a", frame("a"))
        before = sizes(journal)
        with monkeypatch.context() as m:
            if fault == "fsync fails":
                m.setattr(os, "fdatasync", fdatasync_fails_once(journal))
            else:
                # Room for b's whole record and part of c's: b reached the file, yet its group failed.
                disk = DiskFull(journal, len(frame("b")) + 8 + 5 if fault == "short write" else 0)
                m.setattr(os, "write", disk)
            outcomes = await append_together(journal, "b", "c", "d")
            assert all(isinstance(o, OSError) for o in outcomes), outcomes
            assert sizes(journal) == before
            if fault != "fsync fails":
                assert disk.room == 0 and disk.refused == 1
        assert journal.failed_groups == 1
        await journal.append("e", frame("e"))  # space came back
        await append_together(journal, "f", "g")
        assert len(journal.segments()) == 1
        await journal.close()
        assert await restart(tmp_path) == [frame(n) for n in "aefg"]

    asyncio.run(scenario())


async def torn_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Journal, OSError]:
    """A journal holding job "a", then a record of "b" torn by a full disk that could not be cut back out."""
    journal = open_journal(tmp_path)
    await journal.append("a", frame("a"))
    with monkeypatch.context() as m:
        m.setattr(os, "write", DiskFull(journal, 10))
        m.setattr(os, "ftruncate", no_ftruncate)
        with pytest.raises(OSError) as failed:
            await journal.append("b", frame("b"))
    return journal, failed.value


def test_a_segment_that_cannot_be_cut_back_is_left_for_a_new_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        journal, failed = await torn_tail(tmp_path, monkeypatch)
        assert failed.errno == errno.ENOSPC
        first, = journal.segments()
        assert first.stat().st_size == len(frame("a")) + 8 + 10  # the torn record is still there
        await journal.append("c", frame("c"))
        await append_together(journal, "d", "e")
        assert [p.name for p in journal.segments()][0] == first.name and len(journal.segments()) == 2
        await journal.close()
        # The torn tail ends the first segment's replay, not the second's.
        assert await restart(tmp_path) == [frame(n) for n in "acde"]

    asyncio.run(scenario())


def test_the_abandoned_segment_is_reclaimed_once_its_jobs_are_final(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        journal, _ = await torn_tail(tmp_path, monkeypatch)
        await journal.append("c", frame("c"))
        first = journal.segments()[0]
        journal.done("a")
        assert not first.exists() and len(journal.segments()) == 1
        await journal.close()
        assert await restart(tmp_path) == [frame("c")]

    asyncio.run(scenario())


# Runs inside the user namespace, with a 512 KiB tmpfs mounted on argv[1]; prints what it saw as JSON.
TINY_DISK = textwrap.dedent("""
    import asyncio, errno, json, os, sys
    from pathlib import Path
    from gateway.journal import Journal

    disk = Path(sys.argv[1])

    async def main():
        journal = Journal(disk / "journal", 1 << 20)
        journal.replay()
        journal.open([])
        await journal.append("a", b"a" * 1000)
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        os.ftruncate(fd, os.fstat(fd).st_size - 8192)  # room for part of the next record only
        os.close(fd)
        segment, = journal.segments()
        before = segment.stat().st_size
        try:
            await journal.append("b", b"b" * 65536)
            refused = None
        except OSError as exc:
            refused = exc.errno
        after = segment.stat().st_size
        (disk / "filler").unlink()
        await journal.append("c", b"c" * 1000)
        await journal.close()
        fresh = Journal(disk / "journal", 1 << 20)
        frames = [f[:1].decode() + str(len(f)) for f in fresh.replay()]
        print(json.dumps({"refused": refused, "before": before, "after": after, "replayed": frames}))

    asyncio.run(main())
""")


def test_a_real_full_tmpfs(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1)")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "tiny_disk.py"
    script.write_text(TINY_DISK)
    shell = 'mount -t tmpfs -o size=512k tmpfs "$1" || exit 77; exec "$2" "$3" "$1"'
    run = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "sh", "-c", shell, "sh",
                          str(disk), sys.executable, str(script)],
                         cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60, check=False)
    if run.returncode == 77 or (run.returncode != 0 and "unshare" in run.stderr):
        pytest.skip(f"no unprivileged tmpfs here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["refused"] == errno.ENOSPC
    assert seen["after"] == seen["before"]
    assert seen["replayed"] == ["a1000", "c1000"]
