"""The delivery thread of a :class:`~pipeline_sdk.shipper.Shipper`: from the spool to the transport.

It first delivers what dead processes left in their spools (adopted, oldest first), then
follows this process's spool, one chunk at a time: consecutive frames of one tag, up to
:data:`CHUNK_EVENTS` events or about :data:`CHUNK_BYTES` bytes, sent as one Forward message.
A frame is marked delivered only once the transport acknowledged its chunk.  A failure
leaves the chunk in the spool and retries it with capped exponential backoff (from 0.05 s,
doubling to 2 s, with jitter: :class:`~pipeline_sdk.backoff.Backoff`); the first success
after failures is logged.

:class:`DeliveryThread` is the shipper's delivery half: the shipper inherits it, and the
state it shares with the spooler is declared by :class:`~pipeline_sdk.stats.ShipperState`.
"""

from __future__ import annotations

import logging
import threading

from .backoff import Backoff
from .forward import DeliveryError
from .frames import Chunk, Frame
from .spool import SpoolDir
from .spooler import SPOOL_RETRY
from .stats import ShipperState
from .transports import Sink

log = logging.getLogger("mlobs")

CHUNK_EVENTS = 16_384  # consecutive frames of a tag are sent as one chunk of up to this many events
CHUNK_BYTES = 4 * 1024 * 1024  # or about this many bytes
BACKOFF_MIN = 0.05  # seconds before the first retry of a failed delivery
BACKOFF_MAX = 2.0  # cap of the exponential backoff


class DeliveryThread(ShipperState):
    """The delivery loop; its state lives on the shipper, so a restart after a crash resumes it."""

    # The delivery thread's own state, kept across its restarts (set by the Shipper).
    _sink: Sink | None
    _orphans: list[SpoolDir] | None  # adopted leftover spools not yet delivered
    _orphans_done: threading.Event

    def _delivery_loop(self) -> None:
        """Deliver what earlier processes left, then follow this process's spool until close().

        Its state lives on the shipper, so after a crash the supervisor starts it again
        where it was: the adopted spools are kept (and stay locked), and what was handed
        out but not acknowledged is handed out again.
        """
        try:
            if self._sink is None:
                self._sink = self.transport.open()
            sink = self._sink
            if self._orphans is None:
                own = self._spool.path.name if self._spool is not None else ""
                self._orphans = SpoolDir.adopt_orphans(self._spool_root, exclude=own)
            while self._orphans:
                orphan = self._orphans[0]
                orphan.rewind()
                log.info(
                    "mlobs: delivering %d bytes left in %s by an earlier process",
                    orphan.pending_bytes(),
                    orphan.path,
                )
                if not self._deliver_all(sink, orphan, adopted=True):
                    return
                self._orphans.pop(0)
                orphan.release()  # removes it when it was delivered to the end
                self._collect_spool_counts(orphan)
            self._orphans_done.set()
            while (spool := self._spool) is None:
                if self._stopping.is_set():
                    return
                with self._progress:
                    self._progress.wait(SPOOL_RETRY)
            spool.rewind()
            self._deliver_all(sink, spool, adopted=False)
        except BaseException:
            if self._sink is not None:
                self._sink.close()
                self._sink = None
            raise
        finally:
            if self._stopping.is_set():
                self._stop_delivery()
            with self._progress:
                self._progress.notify_all()

    def _stop_delivery(self) -> None:
        for orphan in self._orphans or ():
            orphan.release()  # unlocked and kept for a later process
        self._orphans = []
        self._orphans_done.set()
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _deliver_all(self, sink: Sink, spool: SpoolDir, adopted: bool) -> bool:
        """Deliver ``spool`` in order until it is empty (adopted) or until close() (our own).

        Consecutive frames of one tag go out as one chunk.  A chunk that fails is kept
        and retried with capped exponential backoff.  Returns False when close() stopped
        it with frames left undelivered.
        """
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        chunk: Chunk | None = None
        carry: Frame | None = None  # read ahead, of another tag: it starts the next chunk
        while True:
            if chunk is None:
                chunk, carry = self._next_chunk(spool, carry)
                if chunk is None:
                    if adopted or self._stopping.is_set():
                        return True
                    with self._progress:
                        self._progress.wait(self._linger)
                    continue
            if self._stopping.is_set():  # close() stops us only once its flush deadline passed
                spool.rewind()
                return False
            try:
                sink.deliver(chunk)
            except DeliveryError as exc:
                delay = backoff.failed()
                with self._lock:
                    self._stats.delivery_failures += 1
                    self._stats.last_error = str(exc)
                self._warn.warning("delivery", "mlobs: delivery failed, will retry in %.2f s: %s", delay, exc)
                self._stopping.wait(backoff.jittered())
                continue
            if backoff.reset():
                log.info("mlobs: delivery to %s recovered", self.transport.describe())
            for frame in chunk.frames:
                spool.ack(frame)
            self._collect_spool_counts(spool)
            self._on_delivered(chunk.count, adopted)
            chunk = None

    def _next_chunk(self, spool: SpoolDir, carry: Frame | None) -> tuple[Chunk | None, Frame | None]:
        """The next frames of one tag, up to CHUNK_EVENTS events; and a frame read ahead."""
        first = carry if carry is not None else spool.next_frame()
        self._collect_spool_counts(spool)
        if first is None:
            return None, None
        frames, count, size = [first], first.count, len(first.entries)
        while count < CHUNK_EVENTS and size < CHUNK_BYTES:
            frame = spool.next_frame()
            if frame is None:
                break
            if frame.tag != first.tag:
                return Chunk.of(frames), frame
            frames.append(frame)
            count += frame.count
            size += len(frame.entries)
        return Chunk.of(frames), None

    def _on_delivered(self, count: int, adopted: bool) -> None:
        with self._lock:
            self._stats.delivered_events += count
            if adopted:
                self._stats.adopted_events += count
        with self._progress:
            self._progress.notify_all()

    def _collect_spool_counts(self, spool: SpoolDir) -> None:
        """Move a spool's counts of corrupt bytes and harmless disk errors into the stats."""
        if spool.lost_bytes or spool.errors:
            with self._lock:
                self._stats.lost_corrupt_bytes += spool.lost_bytes
                self._stats.spool_errors += spool.errors
                if spool.errors:
                    self._stats.last_spool_error = spool.last_error
            spool.lost_bytes = spool.errors = 0
