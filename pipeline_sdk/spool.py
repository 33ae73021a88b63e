"""A bounded on-disk spool of frames: what has been logged but not yet delivered.

Every frame goes through the spool before it is delivered (write-ahead), so what
a process logged survives the process: a later process that uses the same
``MLOBS_HOME`` adopts the spool of a dead one and delivers it first.

Layout, under ``<home>/spool/<transport>/``::

    <owner>/owner.lock          flock()ed by the owning process while it lives
    <owner>/<seq>.seg           frames, appended
    <owner>/<seq>.ack           8 bytes: offset up to which <seq>.seg is delivered

A frame is a header ``magic, tag length, entries length, event count, crc32``
followed by the tag and the PackedForward ``entries``.  Its chunk id (for the
Forward protocol's ack) is derived from the owner, segment and offset, so a
resend after a crash carries the same id.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("mlobs.spool")

_HEADER = struct.Struct(">2sBIII")  # magic, tag length, entries length, count, crc32
_MAGIC = b"MF"
_ACK = struct.Struct(">Q")
SEGMENT_BYTES = 8 * 1024 * 1024  # roll to a new segment file past this size
LOCK_NAME = "owner.lock"


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
    __slots__ = ("ack_fd", "acked", "closed", "fd", "path", "read_at", "seq", "size", "verify")

    def __init__(self, seq: int, path: Path, size: int, acked: int, closed: bool) -> None:
        self.seq = seq
        self.path = path
        self.size = size  # bytes written and visible to the reader
        self.acked = acked  # bytes delivered
        self.read_at = acked  # next frame to hand out
        self.closed = closed  # no more appends
        # Found on disk (after a crash, say): check every frame's checksum.  A segment
        # this process is writing holds exactly what it wrote, so it needs no check.
        self.verify = closed
        self.fd: int | None = None
        self.ack_fd: int | None = None


def _lock(path: Path) -> int | None:
    """flock ``path`` without waiting; the fd, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        return None  # its directory vanished: another process finished with it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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
        for seg_path in sorted(path.glob("*.seg")):
            seq = int(seg_path.stem)
            acked = 0
            ack_path = seg_path.with_suffix(".ack")
            if ack_path.exists():
                raw = ack_path.read_bytes()
                if len(raw) == _ACK.size:
                    (acked,) = _ACK.unpack(raw)
            size = seg_path.stat().st_size
            self._segments.append(_Segment(seq, seg_path, size, min(acked, size), closed=True))
        # Segment numbers are never reused: they name chunk ids.
        self._next_seq = self._segments[-1].seq + 1 if self._segments else 0

    # ---- ownership -----------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, segment_bytes: int = SEGMENT_BYTES) -> SpoolDir:
        """A fresh directory owned by this process; names sort by creation time."""
        root.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(4)}"
        path = root / name
        path.mkdir(mode=0o700)
        fd = _lock(path / LOCK_NAME)
        if fd is None:  # pragma: no cover - a fresh random name cannot be locked by anyone else
            raise RuntimeError(f"cannot lock new spool directory {path}")
        return cls(path, fd, segment_bytes)

    @classmethod
    def adopt_orphans(cls, root: Path, exclude: str) -> list[SpoolDir]:
        """Directories under ``root`` whose owner is gone, locked for us, oldest first."""
        adopted: list[SpoolDir] = []
        if not root.is_dir():
            return adopted
        for path in sorted(p for p in root.iterdir() if p.is_dir() and p.name != exclude):
            fd = _lock(path / LOCK_NAME)
            if fd is None:
                continue
            if not path.is_dir():  # removed between listing and locking
                os.close(fd)
                continue
            adopted.append(cls(path, fd))
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
                (self.path / LOCK_NAME).unlink(missing_ok=True)
                try:
                    self.path.rmdir()
                except OSError as exc:  # something unexpected was put there; leave it
                    log.warning("mlobs: could not remove spool directory %s: %s", self.path, exc)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        return empty

    # ---- writing (the owner's spooler thread) -----------------------------------------

    def append(self, frames: list[list[bytes]]) -> int:
        """Append frames with one write; returns the bytes written (0 if the disk refused)."""
        size = sum(len(part) for frame in frames for part in frame)
        parts = [part for frame in frames for part in frame]
        with self._mutex:
            seg = self._segments[-1] if self._segments else None
            if seg is None or seg.closed or (seg.size > 0 and seg.size + size > self._segment_bytes):
                if seg is not None:
                    seg.closed = True
                    if seg.acked >= seg.size:  # nothing left to deliver in it
                        self._record_ack(seg, seg.size)
                seg = self._new_segment()
            fd = self._open(seg)
            start = seg.size
        try:
            written = os.pwritev(fd, parts, start) if len(parts) > 1 else os.pwrite(fd, parts[0], start)
            if written != size:
                raise OSError(f"short write: {written} of {size} bytes")
        except OSError as exc:
            log.warning("mlobs: spool write to %s failed: %s", seg.path, exc)
            try:
                os.ftruncate(fd, start)
            except OSError as trunc_exc:
                log.warning("mlobs: could not truncate %s after a failed write: %s", seg.path, trunc_exc)
            return 0
        with self._mutex:
            seg.size = start + size
        return size

    def _new_segment(self) -> _Segment:
        seq = self._next_seq
        self._next_seq += 1
        seg = _Segment(seq, self.path / f"{seq:012d}.seg", 0, 0, closed=False)
        self._segments.append(seg)
        return seg

    def _open(self, seg: _Segment) -> int:
        if seg.fd is None:
            seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT, 0o600)
        return seg.fd

    # ---- reading and acknowledging (the delivery thread) ---------------------------------

    def pending_bytes(self) -> int:
        with self._mutex:
            return sum(s.size - s.acked for s in self._segments)

    def disk_bytes(self) -> int:
        with self._mutex:
            return sum(s.size for s in self._segments)

    def next_frame(self) -> Frame | None:
        """The oldest frame not yet handed out, or None when the reader has caught up."""
        while True:
            with self._mutex:
                seg = next((s for s in self._segments if s.read_at < s.size), None)
                if seg is None:
                    return None
                fd = self._open(seg)
                offset, limit = seg.read_at, seg.size
            try:
                frame = self._read_frame(fd, seg, offset, limit)
            except SpoolCorrupt as exc:
                with self._mutex:
                    log.error(
                        "mlobs: spool segment %s is corrupt at byte %d (%s); skipping its remaining %d bytes",
                        seg.path,
                        offset,
                        exc,
                        limit - offset,
                    )
                    self.lost_bytes += limit - offset
                    seg.read_at = seg.size
                    self._record_ack(seg, seg.size)
                continue
            with self._mutex:
                seg.read_at = frame.end
            return frame

    def _read_frame(self, fd: int, seg: _Segment, offset: int, limit: int) -> Frame:
        header = os.pread(fd, _HEADER.size, offset)
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
        if seg.verify and zlib.crc32(body) != crc:
            raise SpoolCorrupt("checksum mismatch")
        digest = hashlib.blake2b(f"{self.name}/{seg.seq}/{offset}".encode(), digest_size=16).digest()
        return Frame(
            tag=body[:tag_len].decode(),
            count=count,
            entries=body[tag_len:],
            chunk_id=base64.b64encode(digest).decode(),
            segment=seg.seq,
            end=end,
        )

    def rewind(self) -> None:
        """Hand out again everything not acknowledged (after a failed delivery)."""
        with self._mutex:
            for seg in self._segments:
                seg.read_at = seg.acked

    def ack(self, frame: Frame) -> None:
        """Mark everything up to the end of ``frame`` delivered; drop finished segments."""
        with self._mutex:
            seg = next(s for s in self._segments if s.seq == frame.segment)
            self._record_ack(seg, frame.end)

    def _record_ack(self, seg: _Segment, offset: int) -> None:
        seg.acked = offset
        if seg.closed and seg.acked >= seg.size:
            self._close_fds(seg)
            self._unlink(seg)
            self._segments.remove(seg)
            return
        if seg.ack_fd is None:
            seg.ack_fd = os.open(seg.path.with_suffix(".ack"), os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(seg.ack_fd, _ACK.pack(offset), 0)

    def _close_fds(self, seg: _Segment) -> None:
        for attr in ("fd", "ack_fd"):
            fd = getattr(seg, attr)
            if fd is not None:
                os.close(fd)
                setattr(seg, attr, None)

    @staticmethod
    def _unlink(seg: _Segment) -> None:
        seg.path.unlink(missing_ok=True)
        seg.path.with_suffix(".ack").unlink(missing_ok=True)
