"""The batching hand-off between the caller and a transport.

The caller appends its encoded entry to the in-memory deque of its stream (one
per Fluentd tag) and returns: it never waits on a socket, a disk or an SQLite
commit.  Two daemon threads do the rest:

* the *spooler* drains the deques every ``linger`` seconds (or sooner when one
  grows), turns each stream's entries into frames, and appends them to this
  process's on-disk spool with one write;
* the *delivery* thread first delivers what dead processes left in their spools,
  then follows this process's spool, one frame at a time, and marks a frame
  delivered only once the transport acknowledged it.  A failure leaves the frame
  in the spool and retries with capped exponential backoff.

So the caller's cost does not depend on the transport's state, and nothing
logged is lost unless a bound is hit or the disk refuses it: a deque
(``max_queue`` events), the spool (``spool_max_bytes``), or an ``OSError``
writing the spool (a full or read-only disk, no file descriptors left).  Order
is kept within each stream; across streams it does not matter, as every event
carries its own timestamp.  Every drop is counted in :class:`ShipperStats` and
logged (rate-limited), never silent.

Both threads are supervised: an unexpected exception is logged and counted, the
events the spooler held are counted as dropped, and the loop starts again after
a backoff.  Nothing ever escapes a background thread, and once the disk has room
again the spool takes events again by itself.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import contract as c
from .forward import DeliveryError
from .spool import Chunk, Frame, SpoolDir, frame_bytes
from .transports import Sink, Transport

log = logging.getLogger("mlobs")

SLICE = 8192  # entries drained per GIL hold of the spooler (about 0.6 ms)
YIELD = 0.0002  # seconds the spooler sleeps between slices, so callers get the GIL
FRAME_EVENTS = 4096  # at most this many events per Forward chunk
FRAME_BYTES = 1024 * 1024  # and, for streams of large events, about this many bytes
CHUNK_EVENTS = 16_384  # consecutive frames of a tag are sent as one chunk of up to this many events
CHUNK_BYTES = 4 * 1024 * 1024  # or about this many bytes
# Metric entries are small (a few hundred bytes at most), so whole frames of them are
# popped in C; the other streams are popped one by one, counting bytes.
_SMALL_ENTRY_TAGS = frozenset({c.METRIC.tag, c.LIST_METRIC.tag})
BACKOFF_MIN = 0.05  # seconds before the first retry of a failed delivery
BACKOFF_MAX = 2.0  # cap of the exponential backoff
WARN_EVERY = 10.0  # seconds between repeated warnings of one kind
JOIN_TIMEOUT = 5.0  # seconds close() waits for each thread once its flush deadline passed
SPOOL_RETRY = 1.0  # seconds between attempts to create the spool directory while it cannot be


@dataclass
class ShipperStats:
    """Counters of one shipper; read them with :meth:`Shipper.stats`."""

    spooled_events: int = 0  # events written to the spool
    delivered_events: int = 0  # events the transport acknowledged (this process's and adopted)
    adopted_events: int = 0  # of those, events left behind by earlier processes
    dropped_queue_full: int = 0  # events refused because the in-memory queue was at its bound
    dropped_spool_full: int = 0  # events refused because the spool was at its bound
    dropped_spool_error: int = 0  # events the disk refused (full, read-only, no fds) or a crash held
    dropped_log_records: int = 0  # log records a run's logging handler could not record at all
    dropped_invalid: int = 0  # recording calls refused as invalid and dropped (on_invalid="drop")
    dropped_at_close: int = 0  # events still queued in memory when close() stopped the spooler
    lost_corrupt_bytes: int = 0  # spool bytes found corrupt and skipped (after a disk fault)
    spool_errors: int = 0  # disk errors that lost nothing (an ack or unlink that failed): lived with
    delivery_failures: int = 0  # failed delivery attempts (each one retried)
    thread_restarts: int = 0  # times a background thread crashed and was started again
    queued_events: int = 0  # events in memory, not yet spooled
    pending_bytes: int = 0  # spooled bytes not yet delivered
    spooler_alive: bool = False  # the spooler thread runs
    delivery_alive: bool = False  # the delivery thread runs
    last_error: str | None = None  # the last delivery error, if any
    last_spool_error: str | None = None  # the last disk error of the spool, if any
    last_thread_error: str | None = None  # the last crash of a background thread, if any

    @property
    def dropped_events(self) -> int:
        """Every event counted as lost: logged, but never to be delivered."""
        return (
            self.dropped_queue_full
            + self.dropped_spool_full
            + self.dropped_spool_error
            + self.dropped_log_records
            + self.dropped_invalid
            + self.dropped_at_close
        )


class _RateLimitedWarning:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = -WARN_EVERY  # the first warning is always logged, however young the clock
        self._suppressed = 0

    def __call__(self, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self._clock()
        if now - self._last >= WARN_EVERY:
            if self._suppressed:
                msg += f" ({self._suppressed} similar warnings suppressed)"
            log.warning(msg, *args, exc_info=exc_info)
            self._last, self._suppressed = now, 0
        else:
            self._suppressed += 1


class Shipper:
    """Owns the queues, the spool and the two threads of one transport."""

    def __init__(
        self,
        transport: Transport,
        home: Path,
        *,
        spool_max_bytes: int = 512 * 1024 * 1024,
        max_queue: int = 262_144,
        linger: float = 0.01,
        exit_timeout: float = 10.0,
    ) -> None:
        self.transport = transport
        # One deque of encoded entries per Fluentd tag; recorders append to them.
        self.queues: dict[str, deque[bytes]] = {stream.tag: deque() for stream in c.STREAMS}
        self.max_queue = max_queue
        # Above this the caller lends the spooler the GIL for a moment (see relieve()).
        self.soft_limit = min(65_536, max(max_queue // 4, 1))
        self._spool_root = Path(home) / "spool" / transport.kind
        self._spool_max_bytes = spool_max_bytes
        self._linger = linger
        self._exit_timeout = exit_timeout
        self._closed = False
        self._atexit = _atexit_closer(self)
        self._init_state()
        self._start()
        atexit.register(self._atexit)
        os.register_at_fork(after_in_child=_after_fork_closer(self))

    def _init_state(self) -> None:
        self._stats = ShipperStats()
        self._lock = threading.Lock()  # guards _stats updates from the threads
        self._progress = threading.Condition()  # notified on every drain and ack
        self._wake = threading.Event()  # wakes the spooler early
        self._stopping = threading.Event()
        self._draining = False  # the spooler holds entries it popped but has not written yet
        self._warn_drop = _RateLimitedWarning()
        self._warn_delivery = _RateLimitedWarning()
        self._warn_thread = _RateLimitedWarning()
        self._orphans_done = threading.Event()
        self._orphans: list[SpoolDir] | None = None  # adopted leftover spools not yet delivered
        self._sink: Sink | None = None
        self._spool: SpoolDir | None = None
        self._spool_tried = 0.0

    def _start(self) -> None:
        self._ensure_spool()
        self._spooler = threading.Thread(
            target=self._supervise, args=(self._spool_loop,), name="mlobs-spooler", daemon=True
        )
        self._delivery = threading.Thread(
            target=self._supervise, args=(self._delivery_loop,), name="mlobs-delivery", daemon=True
        )
        self._spooler.start()
        self._delivery.start()

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
        self._warn_drop("mlobs: %s; events are dropped and counted until it can", what)

    # ---- the caller's side --------------------------------------------------------------

    def relieve(self, queue: deque[bytes]) -> bool:
        """Called by a recorder when ``queue`` is past its soft limit; False means drop.

        The spooler normally keeps up with ease, but a caller in a tight loop holds the
        GIL and the spooler gets it only every switch interval (5 ms); if the disk is
        slow too, the queue grows.  Sleeping 0.1 ms lends the spooler the GIL, which
        keeps the queue bounded at the price of a slow call in thousands.  At
        ``max_queue`` the event is dropped, counted and logged.
        """
        if len(queue) >= self.max_queue:
            with self._lock:
                self._stats.dropped_queue_full += 1
                dropped = self._stats.dropped_queue_full
            self._warn_drop(
                "mlobs: in-memory queue full (%d events): event dropped (%d so far); "
                "the spool at %s cannot keep up",
                self.max_queue,
                dropped,
                self.spool_path,
            )
            return False
        self._wake.set()
        time.sleep(0.0001)
        return True

    def count_lost_log_record(self) -> None:
        """A logging handler could not turn a record into an event: count it (it logs why itself)."""
        with self._lock:
            self._stats.dropped_log_records += 1

    def count_invalid(self) -> None:
        """A recording call was refused as invalid and dropped (on_invalid="drop"): count it."""
        with self._lock:
            self._stats.dropped_invalid += 1

    def stats(self) -> ShipperStats:
        with self._lock:
            snapshot = ShipperStats(**vars(self._stats))
        snapshot.queued_events = self._queued()
        snapshot.pending_bytes = self._pending_bytes()
        snapshot.spooler_alive = self._spooler.is_alive()
        snapshot.delivery_alive = self._delivery.is_alive()
        return snapshot

    @property
    def spool_path(self) -> Path:
        """This process's spool directory (its parent while none could be created)."""
        spool = self._spool
        return spool.path if spool is not None else self._spool_root

    def _pending_bytes(self) -> int:
        spool = self._spool
        return spool.pending_bytes() if spool is not None else 0

    def wait_spooled(self, timeout: float) -> bool:
        """Wait until everything queued so far is on disk (or counted as dropped), not yet delivered."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._progress:
            while self._queued() or self._draining:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake_if_queued()
                self._progress.wait(min(left, 0.05))
        return True

    def _wake_if_queued(self) -> None:
        """Wake the spooler when it has entries to drain, and only then: every drain notifies the
        waiters, so waking it for nothing would make a waiter spin until its timeout."""
        if self._queued():
            self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until everything logged so far is delivered; False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._progress:
            while (
                self._queued() or self._draining or self._pending_bytes() or not self._orphans_done.is_set()
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake_if_queued()
                self._progress.wait(min(left, 0.05))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush for at most ``timeout`` seconds, stop the threads and release the spool.

        What could not be delivered stays in the spool; the next process that uses the
        same home directory and transport kind delivers it.  Returns True when nothing
        was left behind.
        """
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit)
        timeout = self._exit_timeout if timeout is None else timeout
        delivered = self.flush(timeout)
        self._stopping.set()
        self._wake.set()
        # Both joins are bounded: a hung disk or socket must not hang the exit of a step.
        self._spooler.join(JOIN_TIMEOUT)
        with self._progress:
            self._progress.notify_all()
        self._delivery.join(JOIN_TIMEOUT)
        stuck = [t.name for t in (self._spooler, self._delivery) if t.is_alive()]
        if stuck:
            log.warning("mlobs: %s did not stop within %.0f s; leaving them behind", stuck, JOIN_TIMEOUT)
            return False
        left = self._queued()  # appended while close() ran, after the spooler's last drain
        if left:
            for queue in self.queues.values():
                queue.clear()
            with self._lock:
                self._stats.dropped_at_close += left
            log.warning("mlobs: %d events were logged while the client closed; dropped and counted", left)
        pending = self._pending_bytes()
        if self._spool is not None:
            self._spool.release()
        if not delivered or pending:
            log.warning(
                "mlobs: %d bytes of events not delivered to %s within %.1f s; they are kept in %s "
                "and the next process using this MLOBS_HOME delivers them",
                pending,
                self.transport.describe(),
                timeout,
                self.spool_path,
            )
        return delivered and not pending

    # ---- supervision ----------------------------------------------------------------------

    def _supervise(self, loop: Callable[[], None]) -> None:
        """Run ``loop`` until it returns (on close), starting it again after any crash."""
        backoff = 0.0
        while True:
            try:
                loop()
                return
            except Exception as exc:  # noqa: BLE001 - nothing may escape a background thread: count, restart
                backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
                what = f"{threading.current_thread().name}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self._stats.thread_restarts += 1
                    self._stats.last_thread_error = what
                self._warn_thread("mlobs: %s; restarting in %.2f s", what, backoff, exc_info=True)
                if self._stopping.wait(backoff):
                    return

    # ---- the spooler thread -------------------------------------------------------------

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
            self._warn_drop(
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
        self._warn_drop("mlobs: %d events dropped (%d so far): %s", events, dropped, why)

    # ---- the delivery thread --------------------------------------------------------------

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
        backoff = 0.0
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
                backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
                with self._lock:
                    self._stats.delivery_failures += 1
                    self._stats.last_error = str(exc)
                self._warn_delivery("mlobs: delivery failed, will retry in %.2f s: %s", backoff, exc)
                jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreads retries, not a secret
                self._stopping.wait(backoff * jitter)
                continue
            if backoff:
                log.info("mlobs: delivery to %s recovered", self.transport.describe())
                backoff = 0.0
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

    # ---- process lifecycle ------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's queues and threads are not ours; start afresh."""
        for queue in self.queues.values():
            queue.clear()
        self._init_state()  # the parent's spool stays the parent's: the child makes its own
        if not self._closed:
            self._start()


def _atexit_closer(shipper: Shipper):  # type: ignore[no-untyped-def]
    ref = weakref.ref(shipper)

    def close_at_exit() -> None:
        target = ref()
        if target is not None:
            target.close()

    return close_at_exit


def _after_fork_closer(shipper: Shipper):  # type: ignore[no-untyped-def]
    ref = weakref.ref(shipper)

    def reset() -> None:
        target = ref()
        if target is not None:
            target._reset_after_fork()

    return reset
