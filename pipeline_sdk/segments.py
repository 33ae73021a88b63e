"""The files of one spool directory: its segments, their acks and the owner's lock.

Under ``<owner>/``: ``owner.lock``, flock()ed by the owning process while it lives;
``<seq>.seg``, frames appended (``<seq>``: 12 decimal digits); ``<seq>.ack``, 8 bytes, the
offset up to which that segment is delivered.  Only these names are read back, only from
regular files of this user, never through a symlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import struct
from collections.abc import Callable
from pathlib import Path

from .files import open_private, owned_by_us

ACK = struct.Struct(">Q")  # an .ack file: the delivered offset of its segment
LOCK_NAME = "owner.lock"
SEGMENT_NAME = re.compile(r"(\d{12})\.seg")  # the only segment names read back
# A segment file found on disk: (seq, path, size or None if not to be read, acked offset)
FoundSegment = tuple[int, Path, int | None, int]


class Segment:
    """One segment file of a spool directory, as its owner or adopter holds it."""

    __slots__ = (
        "ack_fd",
        "acked",
        "closed",
        "fd",
        "gaps",
        "path",
        "read_at",
        "seq",
        "size",
        "verify",
        "writing",
    )

    def __init__(self, seq: int, path: Path, size: int, acked: int, closed: bool) -> None:
        self.seq = seq
        self.path = path
        self.size = size  # bytes written and visible to the reader
        self.acked = acked  # bytes delivered
        self.read_at = acked  # next frame to hand out
        self.closed = closed  # no more appends
        self.writing = False  # an append is under way outside the mutex: keep the fd open
        self.gaps: dict[int, int] = {}  # corrupt byte ranges skipped: start -> first byte after
        # Found on disk (after a crash, say): check every frame's checksum.  A segment
        # this process is writing holds exactly what it wrote, so it needs no check.
        self.verify = closed
        self.fd: int | None = None
        self.ack_fd: int | None = None


def lock_owner(path: Path) -> int | None:
    """flock ``path`` without waiting; the fd, or None when another process holds it."""
    try:
        fd = open_private(path)
    except FileNotFoundError:
        return None  # its directory vanished: another process finished with it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_ack(path: Path) -> int | None:
    """The offset in ``path``; 0 when there is none; None when it is not a file of ours (distrust)."""
    try:
        # Read-only (O_RDONLY is 0) and close-on-exec (os.open's default, PEP 446) as every open here.
        # O_NONBLOCK: a FIFO planted as an ack would otherwise block the open until a writer came
        fd = os.open(path, os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: never followed, and its segment left alone
            return None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not owned_by_us(info):
            return None
        raw = os.pread(fd, ACK.size + 1, 0)
    finally:
        os.close(fd)
    return ACK.unpack(raw)[0] if len(raw) == ACK.size else 0


def found_segments(directory: Path, error: Callable[[str], None]) -> list[FoundSegment]:
    """(seq, path, size or None if not to be read, acked) of the segment files in ``directory``, by
    seq; ``error`` is told of each one left alone."""
    found: list[FoundSegment] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            match = SEGMENT_NAME.fullmatch(entry.name)
            if match is None:
                continue  # a stray file ("000003 (copy).seg", notes.txt): not ours to read
            seq, seg_path = int(match.group(1)), Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            acked = read_ack(seg_path.with_suffix(".ack"))
            if not stat.S_ISREG(info.st_mode) or not owned_by_us(info) or acked is None:
                error(
                    f"{seg_path}: the segment or its .ack is not a regular file of this user; "
                    "left alone, not delivered"
                )
                found.append((seq, seg_path, None, 0))
                continue
            found.append((seq, seg_path, info.st_size, acked))
    return sorted(found)
