"""The counters of a shipper, and the state its two threads share.

:meth:`Client.stats() <pipeline_sdk.client.Client.stats>` returns a snapshot of
:class:`ShipperStats`.  Every event is either delivered or counted in one of the
``dropped_*`` counters; the rest describe the state of the queues, the spool and the two
threads.  :class:`ShipperState` declares what the spooler (:mod:`pipeline_sdk.spooler`) and
the delivery thread (:mod:`pipeline_sdk.delivery`) share; the shipper sets it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .ratelog import RateLimitedLog
from .spool import SpoolDir
from .transports import Transport


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


class ShipperState:
    """What a shipper's threads share; each is set by :class:`~pipeline_sdk.shipper.Shipper`."""

    transport: Transport
    queues: dict[str, deque[bytes]]  # one deque of encoded entries per Fluentd tag
    _lock: threading.Lock  # guards _stats
    _stats: ShipperStats
    _progress: threading.Condition  # notified on every drain and ack
    _wake: threading.Event  # wakes the spooler early
    _stopping: threading.Event
    _draining: bool  # the spooler holds entries it popped but has not written yet
    _warn: RateLimitedLog
    _linger: float
    _spool_root: Path
    _spool_max_bytes: int
    _spool: SpoolDir | None  # this process's spool, once created
    _spool_tried: float
