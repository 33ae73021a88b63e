"""A bounded on-disk spool of frames: what has been logged but not yet delivered.

Every frame goes through the spool before it is delivered (write-ahead), so what
a process logged survives the process: a later process that uses the same
``MLOBS_HOME`` adopts the spool of a dead one and delivers it first.

Layout, under ``<home>/spool/<transport>/``::

    <owner>/owner.lock          flock()ed by the owning process while it lives
    <owner>/<seq>.seg           frames, appended (<seq>: 12 decimal digits)
    <owner>/<seq>.ack           8 bytes: offset up to which <seq>.seg is delivered

Directories are 0700 and files 0600.  A leftover directory is adopted only when it
belongs to this uid, only its own file names are read (anything else is left alone),
and files are opened with ``O_NOFOLLOW``: a planted symlink is never followed.

A frame is a header ``magic, tag length, entries length, event count, crc32``
followed by the tag and the PackedForward ``entries``.  Its chunk id (for the
Forward protocol's ack) is derived from the owner, segment and offset, so a
resend after a crash carries the same id.  A frame that fails its checks (found
after a crash or a disk fault) costs only itself: the reader resynchronises on the
next intact frame and counts the bytes it skipped.

Every ``OSError`` is handled here or raised to the shipper, which counts the events
involved: a failed append raises (its events are dropped and counted), while a
failed ack, unlink or read is counted in :attr:`SpoolDir.errors` and retried or
lived with (an ack that did not reach the disk means a resend after a crash, never
a loss).  A segment that was delivered to its end is removed at once, the one
being written included, so a drained spool gives its disk space back.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .files import OPEN_FLAGS, make_private_dirs, open_private, owned_by_us

log = logging.getLogger("mlobs.spool")

_HEADER = struct.Struct(">2sBIII")  # magic, tag length, entries length, count, crc32
_MAGIC = b"MF"
_ACK = struct.Struct(">Q")
SEGMENT_BYTES = 8 * 1024 * 1024  # roll to a new segment file past this size
LOCK_NAME = "owner.lock"
SEGMENT_NAME = re.compile(r"(\d{12})\.seg")  # the only segment names read back
WARN_EVERY = 10.0  # seconds between repeated warnings of one kind


class SpoolCorrupt(Exception):
    """A segment holds bytes that are not a whole, intact frame."""


@dataclass(frozen=True)
class Frame:
    """One spooled message: ``count`` events of one tag, and where it sits on disk."""

    tag: str
    count: int
    entries: bytes
    chunk_id: str  # base64 of 128 bits, as the Forward protocol's ``chunk`` option wants
    segment: int
    end: int  # offset just past this frame in its segment


_CRC_PIECE = 4096  # below zlib's 5 KiB threshold for releasing the GIL


def crc32_holding_gil(data: bytes, crc: int = 0) -> int:
    """zlib.crc32 in pieces small enough that zlib keeps the GIL.

    The spooler runs while the caller holds the GIL in a tight loop; every release
    and re-acquire costs the spooler a whole switch interval (5 ms), so it does its
    CPU work in one hold and releases the GIL only for the write.
    """
    view = memoryview(data)
    for start in range(0, len(view), _CRC_PIECE):
        crc = zlib.crc32(view[start : start + _CRC_PIECE], crc)
    return crc


@dataclass(frozen=True)
class Chunk:
    """Consecutive frames of one tag, delivered (and acknowledged) as one Forward message."""

    tag: str
    frames: tuple[Frame, ...]
    count: int
    chunk_id: str  # the frame's id, or one derived from the first and last frames'

    @classmethod
    def of(cls, frames: list[Frame]) -> Chunk:
        if len(frames) == 1:
            chunk_id = frames[0].chunk_id
        else:
            both = f"{frames[0].chunk_id}+{frames[-1].chunk_id}".encode()
            chunk_id = base64.b64encode(hashlib.blake2b(both, digest_size=16).digest()).decode()
        return cls(frames[0].tag, tuple(frames), sum(f.count for f in frames), chunk_id)

    @property
    def entries(self) -> list[bytes]:
        return [f.entries for f in self.frames]


def frame_bytes(tag: str, count: int, entries: bytes) -> list[bytes]:
    """The header and body of a frame, ready for ``os.pwritev``."""
    raw_tag = tag.encode()
    crc = crc32_holding_gil(entries, zlib.crc32(raw_tag))
    return [_HEADER.pack(_MAGIC, len(raw_tag), len(entries), count, crc), raw_tag, entries]


class _Segment:
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


def _lock(path: Path) -> int | None:
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


class _Throttle:
    """Log one message per kind at most every WARN_EVERY seconds, counting the rest."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def __call__(self, kind: str, level: int, msg: str, *args: object) -> None:
        now = self._clock()
        if now - self._last.get(kind, -WARN_EVERY) >= WARN_EVERY:
            suppressed = self._suppressed.pop(kind, 0)
            if suppressed:
                msg += f" ({suppressed} similar messages suppressed)"
            log.log(level, msg, *args)
            self._last[kind] = now
        else:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1


_throttle = _Throttle()


def _read_ack(path: Path) -> int | None:
    """The offset in ``path``; 0 when there is none; None when it is not a file of ours (distrust)."""
    try:
        # O_NONBLOCK: a FIFO planted as an ack would otherwise block the open until a writer came
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
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
        raw = os.pread(fd, _ACK.size + 1, 0)
    finally:
        os.close(fd)
    return _ACK.unpack(raw)[0] if len(raw) == _ACK.size else 0


class SpoolDir:
    """The frames of one owner directory: appended by its owner, read by whoever holds its lock."""

    def __init__(self, path: Path, lock_fd: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = path
        self.name = path.name
        self._lock_fd: int | None = lock_fd
        self._segment_bytes = segment_bytes
        self._mutex = threading.Lock()
        self._segments: list[_Segment] = []
        self.lost_bytes = 0  # bytes of frames found corrupt (only after a crash or disk fault)
        self.errors = 0  # OSErrors that cost nothing (a failed ack, unlink or read): counted, lived with
        self.last_error: str | None = None
        self._undeleted: list[Path] = []  # delivered files an unlink refused: tried again at release
        highest = -1
        for seq, seg_path, size, acked in self._found_segments():
            highest = max(highest, seq)
            if size is not None:
                self._segments.append(_Segment(seq, seg_path, size, min(acked, size), closed=True))
        # Segment numbers are never reused: they name chunk ids.
        self._next_seq = highest + 1

    def _found_segments(self) -> list[tuple[int, Path, int | None, int]]:
        """(seq, path, size or None if not to be read, acked) of the segment files, by seq."""
        found: list[tuple[int, Path, int | None, int]] = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                match = SEGMENT_NAME.fullmatch(entry.name)
                if match is None:
                    continue  # a stray file ("000003 (copy).seg", notes.txt): not ours to read
                seq, seg_path = int(match.group(1)), Path(entry.path)
                info = entry.stat(follow_symlinks=False)
                acked = _read_ack(seg_path.with_suffix(".ack"))
                if not stat.S_ISREG(info.st_mode) or not owned_by_us(info) or acked is None:
                    self._error(
                        f"{seg_path}: the segment or its .ack is not a regular file of this user; "
                        "left alone, not delivered"
                    )
                    found.append((seq, seg_path, None, 0))
                    continue
                found.append((seq, seg_path, info.st_size, acked))
        return sorted(found)

    def _error(self, what: str, exc: OSError | None = None) -> None:
        self.errors += 1
        self.last_error = what if exc is None else f"{what}: {exc}"
        _throttle(what.split(":", maxsplit=1)[0], logging.WARNING, "mlobs: spool %s", self.last_error)

    # ---- ownership -----------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir:
        """A fresh directory owned by this process; names sort by creation time.  Raises OSError.

        Between the mkdir and the lock, another process adopting leftovers may lock the new
        directory first (it finds it empty and removes it): then a new name is tried.
        """
        make_private_dirs(root)
        for _ in range(10):
            name = f"{time.time_ns():020d}-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
            path = root / name
            path.mkdir(mode=0o700)
            try:
                fd = _lock(path / LOCK_NAME)
            except OSError:
                with contextlib.suppress(OSError):  # best effort: an empty directory left is harmless
                    path.rmdir()
                raise
            if fd is not None:
                return cls(path, fd, segment_bytes)
        raise BlockingIOError(
            errno.EAGAIN, f"every new spool directory in {root} was locked by another process first"
        )

    @classmethod
    def adopt_orphans(cls, root: Path, exclude: str) -> list[SpoolDir]:
        """Directories under ``root`` of this uid whose owner is gone, locked for us, oldest first.

        Each directory is adopted in its own error handling: one that cannot be read is
        logged and skipped, and never stops the others.
        """
        adopted: list[SpoolDir] = []
        try:
            with os.scandir(root) as entries:
                candidates = sorted(
                    (e.name, e.stat(follow_symlinks=False))
                    for e in entries
                    if e.name != exclude and e.is_dir(follow_symlinks=False)
                )
        except FileNotFoundError:
            return adopted
        except OSError as exc:
            _throttle("adopt", logging.WARNING, "mlobs: cannot list leftover spools in %s: %s", root, exc)
            return adopted
        for name, info in candidates:
            path = root / name
            if not owned_by_us(info):
                log.info(
                    "mlobs: leftover spool %s belongs to uid %d, not this user: not adopted",
                    path,
                    info.st_uid,
                )
                continue
            fd = None
            try:
                fd = _lock(path / LOCK_NAME)
                if fd is None:
                    continue
                if not path.is_dir():  # removed between listing and locking
                    os.close(fd)
                    continue
                adopted.append(cls(path, fd))
            except OSError as exc:
                _throttle("adopt", logging.WARNING, "mlobs: leftover spool %s not adopted: %s", path, exc)
                if fd is not None:
                    os.close(fd)
        return adopted

    def release(self, remove_if_empty: bool = True) -> bool:
        """Close files and unlock; remove the directory when nothing is left to deliver."""
        with self._mutex:
            empty = all(s.acked >= s.size for s in self._segments)
            for seg in self._segments:
                self._close_fds(seg)
            if empty and remove_if_empty:
                for seg in self._segments:
                    self._unlink(seg)
                self._segments.clear()
                undeleted, self._undeleted = self._undeleted, []
                for path in undeleted:
                    self._unlink_file(path)
                try:
                    (self.path / LOCK_NAME).unlink(missing_ok=True)
                    self.path.rmdir()
                except OSError as exc:  # something unexpected was put there; leave it
                    log.warning("mlobs: could not remove spool directory %s: %s", self.path, exc)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        return empty

    # ---- writing (the owner's spooler thread) -----------------------------------------

    def append(self, frames: list[list[bytes]]) -> int:
        """Append frames with one write; returns the bytes written.

        Raises OSError when the disk refused them (the segment is left as it was before
        the write), so the caller can count the events as dropped.
        """
        parts = [part for frame in frames for part in frame]
        if not parts:
            return 0
        size = sum(len(part) for part in parts)
        with self._mutex:
            seg = self._segments[-1] if self._segments else None
            if seg is None or seg.closed or (seg.size > 0 and seg.size + size > self._segment_bytes):
                if seg is not None and not seg.closed:
                    seg.closed = True
                    if seg.acked >= seg.size:  # nothing left to deliver in it
                        self._record_ack(seg, seg.size)
                seg = self._new_segment()
            fd = seg.fd
            assert fd is not None  # opened by _new_segment, closed only once the segment is done
            start = seg.size
            seg.writing = True
        written = 0
        try:
            written = os.pwritev(fd, parts, start) if len(parts) > 1 else os.pwrite(fd, parts[0], start)
            if written != size:
                raise OSError(f"short write: {written} of {size} bytes to {seg.path}")
        except OSError:
            written = 0
            try:
                os.ftruncate(fd, start)
            except OSError as trunc_exc:  # the reader never looks past seg.size, so this is cosmetic
                self._error(f"{seg.path}: could not truncate after a failed write", trunc_exc)
            raise
        finally:
            with self._mutex:  # size and flag together: a segment is rolled only when both say so
                seg.size = start + written
                seg.writing = False
        return size

    def _new_segment(self) -> _Segment:
        """A new segment, its file created (never an existing one: O_EXCL).  Raises OSError."""
        for _ in range(100):
            seq = self._next_seq
            self._next_seq += 1
            path = self.path / f"{seq:012d}.seg"
            try:
                fd = open_private(path, OPEN_FLAGS | os.O_EXCL)
            except FileExistsError:
                continue  # a stray file of that name: skip the number
            seg = _Segment(seq, path, 0, 0, closed=False)
            seg.fd = fd
            self._segments.append(seg)
            return seg
        raise FileExistsError(f"no free segment name in {self.path}")

    # ---- reading and acknowledging (the delivery thread) ---------------------------------

    def pending_bytes(self) -> int:
        with self._mutex:
            return sum(s.size - s.acked for s in self._segments)

    def disk_bytes(self) -> int:
        with self._mutex:
            return sum(s.size for s in self._segments)

    def next_frame(self) -> Frame | None:
        """The oldest frame not yet handed out, or None when the reader has caught up.

        A read that fails (EIO, say) is counted in :attr:`errors` and answers None: the
        caller tries again later.  A segment file that vanished costs its pending bytes.
        """
        while True:
            with self._mutex:
                seg = next((s for s in self._segments if s.read_at < s.size), None)
                if seg is None:
                    return None
                offset, limit = seg.read_at, seg.size
                if offset in seg.gaps:  # skipped before (and counted): a rewind brought us back
                    seg.read_at = seg.gaps[offset]
                    continue
                try:
                    if seg.fd is None:
                        seg.fd = open_private(seg.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError as exc:
                    self._lost(seg, offset, limit, f"the file vanished ({exc.strerror})")
                    continue
                except OSError as exc:
                    self._error(f"{seg.path}: cannot open for reading", exc)
                    return None
                fd = seg.fd
            try:
                frame = self._read_frame(fd, seg, offset, limit)
            except SpoolCorrupt as exc:
                resume = self._resync(fd, seg, offset, limit)
                with self._mutex:
                    self._lost(seg, offset, resume, str(exc))
                continue
            except OSError as exc:
                with self._mutex:
                    self._error(f"{seg.path}: read at byte {offset} failed", exc)
                return None
            with self._mutex:
                seg.read_at = frame.end
            return frame

    def _lost(self, seg: _Segment, offset: int, resume: int, why: str) -> None:
        """Skip the bytes from ``offset`` to ``resume`` of ``seg`` (under the mutex), counting them once.

        Frames before the gap may still be in flight, so the gap is acknowledged only once
        everything before it is (``_record_ack`` steps over it).
        """
        log.error(
            "mlobs: spool segment %s is corrupt at byte %d (%s); skipping %d bytes",
            seg.path,
            offset,
            why,
            resume - offset,
        )
        self.lost_bytes += resume - offset
        seg.read_at = resume
        seg.gaps[offset] = resume
        if seg.acked >= offset:  # nothing before the gap is pending: step over it now
            self._record_ack(seg, offset)

    def _read_frame(self, fd: int, seg: _Segment, offset: int, limit: int, *, verify: bool = False) -> Frame:
        header = os.pread(fd, min(limit - offset, _HEADER.size), offset)
        if len(header) < _HEADER.size or offset + _HEADER.size > limit:
            raise SpoolCorrupt("truncated frame header")
        magic, tag_len, entries_len, count, crc = _HEADER.unpack(header)
        if magic != _MAGIC:
            raise SpoolCorrupt("bad magic")
        end = offset + _HEADER.size + tag_len + entries_len
        if end > limit:
            raise SpoolCorrupt("truncated frame")
        body = os.pread(fd, tag_len + entries_len, offset + _HEADER.size)
        if len(body) != tag_len + entries_len:
            raise SpoolCorrupt("truncated frame body")
        if (verify or seg.verify) and zlib.crc32(body) != crc:
            raise SpoolCorrupt("checksum mismatch")
        try:
            tag = body[:tag_len].decode()
        except UnicodeDecodeError:
            raise SpoolCorrupt("tag is not UTF-8") from None
        digest = hashlib.blake2b(f"{self.name}/{seg.seq}/{offset}".encode(), digest_size=16).digest()
        return Frame(
            tag=tag,
            count=count,
            entries=body[tag_len:],
            chunk_id=base64.b64encode(digest).decode(),
            segment=seg.seq,
            end=end,
        )

    def _resync(self, fd: int, seg: _Segment, offset: int, limit: int) -> int:
        """Offset of the first intact frame (checksum verified) after a corrupt one at ``offset``."""
        try:
            data = os.pread(fd, limit - offset, offset)
        except OSError:
            return limit
        at = data.find(_MAGIC, 1)
        while at != -1:
            try:
                self._read_frame(fd, seg, offset + at, limit, verify=True)
            except SpoolCorrupt:
                at = data.find(_MAGIC, at + 1)
                continue
            except OSError:
                return limit
            return offset + at
        return limit

    def rewind(self) -> None:
        """Hand out again everything not acknowledged (after a failed delivery)."""
        with self._mutex:
            for seg in self._segments:
                seg.read_at = seg.acked

    def ack(self, frame: Frame) -> None:
        """Mark everything up to the end of ``frame`` delivered; drop finished segments."""
        with self._mutex:
            seg = next((s for s in self._segments if s.seq == frame.segment), None)
            if seg is not None:
                self._record_ack(seg, frame.end)

    def _record_ack(self, seg: _Segment, offset: int) -> None:
        seg.acked = max(seg.acked, offset)
        while seg.acked in seg.gaps:  # corrupt bytes right after: nothing there to wait for
            seg.acked = seg.gaps.pop(seg.acked)
        done = seg.acked >= seg.size
        if done and not seg.closed and not seg.writing and seg is self._segments[-1] and seg.size > 0:
            seg.closed = True  # the segment being written, delivered to its end: the next append starts anew
        if seg.closed and done:
            self._close_fds(seg)
            self._unlink(seg)
            self._segments.remove(seg)
            return
        try:
            if seg.ack_fd is None:
                seg.ack_fd = open_private(seg.path.with_suffix(".ack"))
            os.pwrite(seg.ack_fd, _ACK.pack(seg.acked), 0)
        except OSError as exc:  # delivered all the same: a crash before the next ack resends, never loses
            self._error(f"{seg.path}: could not record the ack", exc)

    def _close_fds(self, seg: _Segment) -> None:
        for attr in ("fd", "ack_fd"):
            fd = getattr(seg, attr)
            if fd is not None:
                setattr(seg, attr, None)
                try:
                    os.close(fd)
                except OSError as exc:
                    self._error(f"{seg.path}: close failed", exc)

    def _unlink(self, seg: _Segment) -> None:
        for path in (seg.path, seg.path.with_suffix(".ack")):
            self._unlink_file(path)

    def _unlink_file(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # delivered: if it stays, a later process resends it (one point in InfluxDB)
            self._undeleted.append(path)
            self._error(f"{path}: could not remove a delivered file", exc)
