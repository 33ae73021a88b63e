"""The batching hand-off between the caller and a transport.

The caller appends its encoded entry to the in-memory deque of its stream (one
per Fluentd tag) and returns: it never waits on a socket, a disk or an SQLite
commit.  Two daemon threads do the rest:

* the *spooler* drains the deques every ``linger`` seconds (or sooner when one
  grows), turns each stream's entries into frames, and appends them to this
  process's on-disk spool with one write;
* the *delivery* thread (:mod:`pipeline_sdk.delivery`) first delivers what dead
  processes left in their spools, then follows this process's spool, and marks a
  frame delivered only once the transport acknowledged it.

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
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

from . import contract as c
from .backoff import Backoff
from .delivery import BACKOFF_MAX, BACKOFF_MIN, DeliveryThread
from .ratelog import RateLimitedLog
from .spool import SpoolDir
from .spooler import SpoolerThread
from .stats import ShipperStats
from .transports import Sink, Transport

log = logging.getLogger("mlobs")
__all__ = ["JOIN_TIMEOUT", "Shipper", "ShipperStats"]

JOIN_TIMEOUT = 5.0  # seconds close() waits for each thread once its flush deadline passed


class Shipper(SpoolerThread, DeliveryThread):
    """Owns the queues, the spool and the two threads of one transport (each thread: a base class)."""

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
        os.register_at_fork(after_in_child=_weakly(self, Shipper._reset_after_fork))

    def _init_state(self) -> None:
        self._stats = ShipperStats()
        self._lock = threading.Lock()  # guards _stats updates from the threads
        self._progress = threading.Condition()  # notified on every drain and ack
        self._wake = threading.Event()  # wakes the spooler early
        self._stopping = threading.Event()
        self._draining = False  # the spooler holds entries it popped but has not written yet
        self._warn = RateLimitedLog(log)  # one line per kind ("drop", "delivery", "thread") every 10 s
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
            self._warn.warning(
                "drop",
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
        return self._wait(lambda: bool(self._queued() or self._draining), timeout)

    def _wait(self, busy: Callable[[], bool], timeout: float) -> bool:
        """Wait while ``busy()``, at most ``timeout`` seconds; False if it ran out."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._progress:
            while busy():
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
        return self._wait(
            lambda: bool(
                self._queued() or self._draining or self._pending_bytes() or not self._orphans_done.is_set()
            ),
            timeout,
        )

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
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX, jitter=0)
        while True:
            try:
                loop()
                return
            except Exception as exc:  # noqa: BLE001 - nothing may escape a background thread: count, restart
                delay = backoff.failed()
                what = f"{threading.current_thread().name}: {type(exc).__name__}: {exc}"
                with self._lock:
                    self._stats.thread_restarts += 1
                    self._stats.last_thread_error = what
                self._warn.warning("thread", "mlobs: %s; restarting in %.2f s", what, delay, exc_info=True)
                if self._stopping.wait(delay):
                    return

    # ---- process lifecycle ------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's queues and threads are not ours; start afresh."""
        for queue in self.queues.values():
            queue.clear()
        self._init_state()  # the parent's spool stays the parent's: the child makes its own
        if not self._closed:
            self._start()


def _weakly(shipper: Shipper, method: Callable[[Shipper], object]) -> Callable[[], None]:
    """``method(shipper)`` as a hook that does not keep the shipper alive (atexit and fork hold theirs)."""
    ref = weakref.ref(shipper)

    def call() -> None:
        target = ref()
        if target is not None:
            method(target)

    return call


def _atexit_closer(shipper: Shipper) -> Callable[[], None]:
    return _weakly(shipper, Shipper.close)
