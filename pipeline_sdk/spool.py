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

Frames are written and read by :mod:`pipeline_sdk.frames`, a segment's files by
:mod:`pipeline_sdk.segments`.  A frame that fails its checks (found after a crash or a
disk fault) costs only itself: the reader resynchronises on the next intact frame and
counts the bytes it skipped.

Every ``OSError`` is handled here or raised to the shipper, which counts the events
involved: a failed append raises (its events are dropped and counted), while a
failed ack, unlink or read is counted in :attr:`SpoolDir.errors` and retried or
lived with (an ack that did not reach the disk means a resend after a crash, never
a loss).  A segment that was delivered to its end is removed at once, the one
being written included, so a drained spool gives its disk space back.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from .files import OPEN_FLAGS, make_private_dirs, open_private, owned_by_us
from .frames import Chunk, Frame, SpoolCorrupt, crc32_holding_gil, frame_bytes, next_intact_frame, read_frame
from .ratelog import RateLimitedLog
from .segments import ACK, LOCK_NAME, Segment, found_segments, lock_owner

log = logging.getLogger("mlobs.spool")
__all__ = [
    "LOCK_NAME",
    "SEGMENT_BYTES",
    "Chunk",
    "Frame",
    "SpoolCorrupt",
    "SpoolDir",
    "crc32_holding_gil",
    "frame_bytes",
]

SEGMENT_BYTES = 8 * 1024 * 1024  # roll to a new segment file past this size


_throttle = RateLimitedLog(log)  # one line of a kind every 10 s


class SpoolDir:
    """The frames of one owner directory: appended by its owner, read by whoever holds its lock."""

    def __init__(self, path: Path, lock_fd: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.path = path
        self.name = path.name
        self._lock_fd: int | None = lock_fd
        self._segment_bytes = segment_bytes
        self._mutex = threading.Lock()
        self._segments: list[Segment] = []
        self.lost_bytes = 0  # bytes of frames found corrupt (only after a crash or disk fault)
        self.errors = 0  # OSErrors that cost nothing (a failed ack, unlink or read): counted, lived with
        self.last_error: str | None = None
        self._undeleted: list[Path] = []  # delivered files an unlink refused: tried again at release
        highest = -1
        for seq, seg_path, size, acked in found_segments(self.path, self._error):
            highest = max(highest, seq)
            if size is not None:
                self._segments.append(Segment(seq, seg_path, size, min(acked, size), closed=True))
        # Segment numbers are never reused: they name chunk ids.
        self._next_seq = highest + 1

    def _error(self, what: str, exc: OSError | None = None) -> None:
        self.errors += 1
        self.last_error = what if exc is None else f"{what}: {exc}"
        _throttle.warning(what.split(":", maxsplit=1)[0], "mlobs: spool %s", self.last_error)

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
                fd = lock_owner(path / LOCK_NAME)
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
            _throttle.warning("adopt", "mlobs: cannot list leftover spools in %s: %s", root, exc)
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
                fd = lock_owner(path / LOCK_NAME)
                if fd is None:
                    continue
                if not path.is_dir():  # removed between listing and locking
                    os.close(fd)
                    continue
                adopted.append(cls(path, fd))
            except OSError as exc:
                _throttle.warning("adopt", "mlobs: leftover spool %s not adopted: %s", path, exc)
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

    def _new_segment(self) -> Segment:
        """A new segment, its file created (never an existing one: O_EXCL).  Raises OSError."""
        for _ in range(100):
            seq = self._next_seq
            self._next_seq += 1
            path = self.path / f"{seq:012d}.seg"
            try:
                fd = open_private(path, OPEN_FLAGS | os.O_EXCL)
            except FileExistsError:
                continue  # a stray file of that name: skip the number
            seg = Segment(seq, path, 0, 0, closed=False)
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

    def _lost(self, seg: Segment, offset: int, resume: int, why: str) -> None:
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

    def _read_frame(self, fd: int, seg: Segment, offset: int, limit: int) -> Frame:
        return read_frame(fd, offset, limit, owner=self.name, segment=seg.seq, verify=seg.verify)

    def _resync(self, fd: int, seg: Segment, offset: int, limit: int) -> int:
        """Offset of the first intact frame (checksum verified) after a corrupt one at ``offset``."""
        return next_intact_frame(fd, offset, limit, owner=self.name, segment=seg.seq)

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

    def _record_ack(self, seg: Segment, offset: int) -> None:
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
            os.pwrite(seg.ack_fd, ACK.pack(seg.acked), 0)
        except OSError as exc:  # delivered all the same: a crash before the next ack resends, never loses
            self._error(f"{seg.path}: could not record the ack", exc)

    def _close_fds(self, seg: Segment) -> None:
        for attr in ("fd", "ack_fd"):
            fd = getattr(seg, attr)
            if fd is not None:
                setattr(seg, attr, None)
                try:
                    os.close(fd)
                except OSError as exc:
                    self._error(f"{seg.path}: close failed", exc)

    def _unlink(self, seg: Segment) -> None:
        for path in (seg.path, seg.path.with_suffix(".ack")):
            self._unlink_file(path)

    def _unlink_file(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # delivered: if it stays, a later process resends it (one point in InfluxDB)
            self._undeleted.append(path)
            self._error(f"{path}: could not remove a delivered file", exc)
