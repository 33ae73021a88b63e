"""The spooler thread of a :class:`~pipeline_sdk.shipper.Shipper`: from the queues to the spool.

Every ``linger`` seconds (or sooner when a caller wakes it), it drains the in-memory queues
in slices of :data:`SLICE` events, one GIL hold each, turns each stream's entries into frames
of at most :data:`FRAME_EVENTS` events (or about :data:`FRAME_BYTES` bytes), and appends a
slice's frames to this process's spool with one write; between two slices it sleeps
:data:`YIELD` seconds, so a caller in a tight loop gets the GIL.  Events the spool cannot take
(it is at its bound, its directory cannot be created, the disk refuses the write, or the
spooler crashed holding them) are counted as dropped and logged, rate-limited.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from . import contract as c
from .frames import frame_bytes
from .spool import SpoolDir
from .stats import ShipperState

SLICE = 8192  # entries drained per GIL hold of the spooler (about 0.6 ms)
YIELD = 0.0002  # seconds the spooler sleeps between slices, so callers get the GIL
FRAME_EVENTS = 4096  # at most this many events per Forward chunk
FRAME_BYTES = 1024 * 1024  # and, for streams of large events, about this many bytes
# Metric entries are small (a few hundred bytes at most), so whole frames of them are
# popped in C; the other streams are popped one by one, counting bytes.
_SMALL_ENTRY_TAGS = frozenset({c.METRIC.tag, c.LIST_METRIC.tag})
SPOOL_RETRY = 1.0  # seconds between attempts to create the spool directory while it cannot be


class SpoolerThread(ShipperState):
    """The spooler loop, and the creation of this process's spool directory."""

    def _ensure_spool(self) -> SpoolDir | None:
        """This process's spool directory, created on first use and retried while it cannot be."""
        if self._spool is not None:
            return self._spool
        now = time.monotonic()
        if self._spool_tried and now - self._spool_tried < SPOOL_RETRY:
            return None
        self._spool_tried = now
        try:
            self._spool = SpoolDir.create(self._spool_root)
        except OSError as exc:
            self._spool_failed(f"cannot create a spool directory in {self._spool_root}: {exc}")
            return None
        with self._progress:
            self._progress.notify_all()
        return self._spool

    def _spool_failed(self, what: str) -> None:
        with self._lock:
            self._stats.last_spool_error = what
        self._warn.warning("drop", "mlobs: %s; events are dropped and counted until it can", what)

    def _spool_loop(self) -> None:
        while True:
            self._wake.wait(self._linger)
            self._wake.clear()
            self._drain()
            if self._stopping.is_set() and not self._queued():
                return

    def _drain(self) -> None:
        self._draining = True  # before the first pop, so flush() never sees entries nowhere
        try:
            self._drain_slices()
        finally:
            self._draining = False
            with self._progress:
                self._progress.notify_all()

    def _queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _drain_slices(self) -> None:
        while True:
            frames: list[list[bytes]] = []
            events = 0
            try:
                for tag, queue in self.queues.items():
                    budget = SLICE - events
                    while queue and budget > 0:
                        entries = self._pop_frame(tag, queue, min(budget, FRAME_EVENTS))
                        events += len(entries)
                        budget -= len(entries)
                        frames.append(frame_bytes(tag, len(entries), b"".join(entries)))
            except BaseException:
                self._dropped(events, "the spooler crashed holding them")
                raise
            if not frames:
                return
            self._write(frames, events)
            if self._queued():
                # Hand the GIL to a waiting caller for real.  The release inside the write
                # is too brief for a caller thread to be scheduled on a busy machine, and it
                # would wait out slice after slice; the next slice starts when the spooler
                # gets the GIL back (at the latest after one switch interval, 5 ms).
                time.sleep(YIELD)

    @staticmethod
    def _pop_frame(tag: str, queue: deque[bytes], most: int) -> list[bytes]:
        """Up to ``most`` entries from the left of ``queue``, in order."""
        if tag in _SMALL_ENTRY_TAGS:  # pop in C: about 18 ns an entry
            return list(itertools.starmap(queue.popleft, itertools.repeat((), min(most, len(queue)))))
        entries: list[bytes] = []
        size = 0
        while queue and len(entries) < most and size < FRAME_BYTES:
            entry = queue.popleft()
            entries.append(entry)
            size += len(entry)
        return entries

    def _write(self, frames: list[list[bytes]], events: int) -> None:
        size = sum(len(part) for frame in frames for part in frame)
        spool = self._ensure_spool()
        if spool is None:
            self._dropped(events, f"no spool directory could be created in {self._spool_root}")
        elif spool.disk_bytes() + size > self._spool_max_bytes:
            with self._lock:
                self._stats.dropped_spool_full += events
                dropped = self._stats.dropped_spool_full
            self._warn.warning(
                "drop",
                "mlobs: spool %s full (bound %d bytes): %d events dropped (%d so far); %s is not taking them",
                spool.path,
                self._spool_max_bytes,
                events,
                dropped,
                self.transport.describe(),
            )
        else:
            try:
                spool.append(frames)
            except OSError as exc:
                self._dropped(events, f"writing the spool {spool.path} failed: {exc}")
            else:
                with self._lock:
                    self._stats.spooled_events += events
        with self._progress:
            self._progress.notify_all()

    def _dropped(self, events: int, why: str) -> None:
        """Count ``events`` the spool could not take (a disk error or a crash), and say so."""
        if not events:
            return
        with self._lock:
            self._stats.dropped_spool_error += events
            self._stats.last_spool_error = why
            dropped = self._stats.dropped_spool_error
        self._warn.warning("drop", "mlobs: %d events dropped (%d so far): %s", events, dropped, why)
